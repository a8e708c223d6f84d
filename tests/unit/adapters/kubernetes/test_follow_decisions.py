"""What ends a follow of the monitor's log, shared by the sync and async followers: a real
``ApiException`` of each client (built as the client builds it from a response), and the
connection errors each raises when the API server does not answer."""

import aiohttp
import pytest
import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

from airflow_adaptive.adapters.kubernetes.signal_follower import keep_following_after, pod_gone


@pytest.mark.parametrize("error, keep", [
    (ApiException(status=404, reason="Not Found"), False),
    (AsyncApiException(status=404, reason="Not Found"), False),
    (ApiException(status=400, reason="container is waiting to start"), True),  # sidecar not running yet
    (AsyncApiException(status=500, reason="Internal Server Error"), True),
    (ApiException(status=403, reason="Forbidden"), True),  # logged; the follow retries, the stage runs on
    (urllib3.exceptions.MaxRetryError(None, "/api", "refused"), True),  # API server restarting
    (aiohttp.ClientConnectionError("refused"), True),
    (ConnectionResetError(), True),
])
def test_only_a_pod_that_is_gone_ends_the_follow(error, keep):
    assert keep_following_after(error, "ml/train[adaptive-monitor]") is keep
    assert pod_gone(error) is (not keep)
