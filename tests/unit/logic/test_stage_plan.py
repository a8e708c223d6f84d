"""The operator's decision before a try: modes, fallback, OOM escalation, the log table."""

import pytest

from airflow_adaptive.domain.profile import GpuScaling, PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.sizing import ElasticGpus, GpuType, SizingPolicy
from airflow_adaptive.logic.stage_plan import plan_stage, prediction_table

GiB, MiB = 2**30, 2**20
REQ = ResourceVector(cpu=1, memory=2 * GiB)
LIM = ResourceVector(cpu=2, memory=8 * GiB)
PROFILE = PredictedProfile({"memory": ResourceEstimate(500 * MiB, 800 * MiB), "cpu": ResourceEstimate(0.8, 1.2)}, coverage=0.99,
                           model_version="3")


def test_adaptive_uses_the_policy_size():
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy())
    assert plan.sizing == "predicted" and plan.resizable
    assert plan.size.requests.memory == pytest.approx(500 * MiB)
    assert plan.size.limits.memory == pytest.approx(880 * MiB)


def test_shadow_runs_the_users_request_and_keeps_what_adaptive_would_do():
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "shadow")
    assert plan.sizing == "shadow" and not plan.resizable
    assert plan.size.requests == REQ and plan.size.limits == LIM
    assert plan.policy_size.limits.memory == pytest.approx(880 * MiB)
    assert plan.to_dict()["policy"]["limits"]["memory"] == "880Mi"


def test_fallback_keeps_the_reason_and_the_users_request():
    plan = plan_stage(REQ, LIM, None, SizingPolicy(), "adaptive", fallback="MLflow at http://x did not answer")
    assert plan.sizing == "fallback"
    assert plan.size.requests == REQ and plan.size.limits == LIM
    assert "did not answer" in plan.reasons()[0]


def test_off_ignores_the_prediction():
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "off")
    assert plan.sizing == "off" and plan.profile is None and plan.size.limits == LIM


def test_a_limit_left_out_stays_out():
    plan = plan_stage(REQ, ResourceVector(), PROFILE, SizingPolicy(), "shadow")
    assert plan.size.limits == ResourceVector() and plan.size.requests == REQ


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="sizing mode"):
        plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "aggressive")


def test_retry_after_a_kernel_oom_doubles_the_killed_limit_within_the_users_bound():
    kill = OomEvent(time=1.0, container="base", limit_bytes=880 * MiB, try_number=1)
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), earlier_ooms=[kill])
    assert plan.size.limits.memory == pytest.approx(1760 * MiB)
    assert "try 1 was OOM-killed" in plan.escalation
    capped = plan_stage(REQ, ResourceVector(cpu=2, memory=1 * GiB), PROFILE, SizingPolicy(), earlier_ooms=[kill])
    assert capped.size.limits.memory == pytest.approx(1 * GiB)


def test_a_retry_after_an_oom_kill_is_never_released_below_its_escalated_limit():
    """The kill showed the need is above the old limit: the retry starts at the escalated limit
    locally too (where a resizable stage otherwise starts at its request), and the monitor may
    not release below it (the simulator found runs killed again and again without this floor)."""
    from airflow_adaptive.logic.stage_plan import local_allocation

    kill = OomEvent(time=1.0, container="base", limit_bytes=880 * MiB, try_number=1)
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), earlier_ooms=[kill])
    assert plan.memory_floor == pytest.approx(1760 * MiB) and plan.to_dict()["memory_floor"] == pytest.approx(1760 * MiB)
    first, _ = local_allocation(plan, HOST)
    assert first.memory == pytest.approx(1760 * MiB)
    assert plan_stage(REQ, LIM, PROFILE, SizingPolicy()).memory_floor == 0  # a first try has none
    shadow = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "shadow", earlier_ooms=[kill])
    assert shadow.memory_floor == 0  # shadow mode changes nothing


def test_fallback_retry_escalates_requests_with_limits():
    kill = OomEvent(time=1.0, container="base", limit_bytes=2 * GiB, try_number=1)
    plan = plan_stage(REQ, ResourceVector(), None, SizingPolicy(), "adaptive", fallback="no model", earlier_ooms=[kill])
    assert plan.size.limits.memory == pytest.approx(4 * GiB)
    assert plan.size.requests.memory == pytest.approx(4 * GiB)


def test_shadow_retry_changes_nothing_but_says_what_it_would_do():
    kill = OomEvent(time=1.0, container="base", limit_bytes=2 * GiB, try_number=1)
    plan = plan_stage(REQ, ResourceVector(), PROFILE, SizingPolicy(), "shadow", earlier_ooms=[kill])
    assert plan.size.limits == ResourceVector() and plan.size.requests == REQ  # as the user wrote it
    assert "shadow mode, not applied" in plan.escalation and "4Gi" in plan.escalation


def test_gpu_oom_moves_to_a_larger_gpu_type():
    types = (GpuType("T4", 16 * GiB), GpuType("A100-40GB", 40 * GiB), GpuType("A100-80GB", 80 * GiB))
    profile = PredictedProfile({"gpu": ResourceEstimate(1, 1), "gpu_memory": ResourceEstimate(10 * GiB, 12 * GiB)}, coverage=0.99)
    req = ResourceVector(cpu=1, memory=GiB, gpu=1)
    plan = plan_stage(req, req, profile, SizingPolicy(gpu_types=types))
    assert plan.size.gpu_type == "T4"
    oom = OomEvent(time=1.0, container="base", limit_bytes=16 * GiB, try_number=1, kind="gpu")
    retry = plan_stage(req, req, profile, SizingPolicy(gpu_types=types), earlier_ooms=[oom])
    assert retry.size.gpu_type == "A100-40GB"
    assert "GPU memory" in retry.escalation


GPU_TYPES = (GpuType("T4", 16 * GiB), GpuType("A100-40GB", 40 * GiB), GpuType("A100-80GB", 80 * GiB),
             GpuType("", 10 * GiB, mig="1g.10gb"), GpuType("", 20 * GiB, mig="2g.20gb"))
ONE_GPU = ResourceVector(cpu=1, memory=GiB, gpu=1)


@pytest.mark.parametrize(
    "name, gpu_memory_upper, user, oom_at, start, retry",
    [
        ("a MIG slice moves up to the next slice", 6, ONE_GPU, 10, ("1g.10gb", None), ("2g.20gb", None)),
        ("the largest MIG slice moves to a full GPU", 15, ONE_GPU, 20, ("2g.20gb", None), (None, "A100-40GB")),
        ("a full GPU moves to a bigger one", 30, ONE_GPU, 44, (None, "A100-40GB"), (None, "A100-80GB")),
        ("per GPU on a 4-GPU stage", 4 * 12, ResourceVector(cpu=1, memory=GiB, gpu=4), 4 * 16, (None, "T4"), (None, "A100-40GB")),
    ],
)
def test_gpu_oom_moves_the_retry_up(name, gpu_memory_upper, user, oom_at, start, retry):
    profile = PredictedProfile({"gpu_memory": ResourceEstimate(gpu_memory_upper * GiB / 2, gpu_memory_upper * GiB)}, coverage=0.99)
    policy = SizingPolicy(gpu_types=GPU_TYPES)
    plan = plan_stage(user, user, profile, policy)
    assert (plan.size.mig, plan.size.gpu_type) == start, name
    oom = OomEvent(time=1.0, container="base", limit_bytes=oom_at * GiB, try_number=1, kind="gpu")
    again = plan_stage(user, user, profile, policy, earlier_ooms=[oom])
    assert (again.size.mig, again.size.gpu_type) == retry, f"{name}: {again.escalation}"
    assert again.size.limits.gpu == user.gpu  # the world size is kept on a retry too
    assert "ran out of GPU memory: " in again.escalation


def test_gpu_oom_on_the_largest_type_says_there_is_nowhere_to_go():
    profile = PredictedProfile({"gpu_memory": ResourceEstimate(50 * GiB, 70 * GiB)}, coverage=0.99)
    oom = OomEvent(time=1.0, container="base", limit_bytes=77 * GiB, try_number=2, kind="gpu")
    plan = plan_stage(ONE_GPU, ONE_GPU, profile, SizingPolicy(gpu_types=GPU_TYPES), earlier_ooms=[oom])
    assert plan.size.gpu_type == "A100-80GB"
    assert "try 2 ran out of GPU memory on A100-80GB; no larger GPU type" in plan.escalation


def test_gpu_oom_with_no_known_size_moves_to_the_largest_type():
    oom = OomEvent(time=1.0, container="base", limit_bytes=0.0, try_number=1, kind="gpu")
    plan = plan_stage(ONE_GPU, ONE_GPU, None, SizingPolicy(gpu_types=GPU_TYPES), earlier_ooms=[oom])
    assert plan.size.gpu_type == "A100-80GB" and plan.size.limits.gpu == 1


SATURATED = PredictedProfile({"gpu": ResourceEstimate(3.6, 3.95), "gpu_memory": ResourceEstimate(40 * GiB, 60 * GiB)},
                             coverage=0.99, duration=ResourceEstimate(7200, 9000),
                             gpu_scaling=GpuScaling(a=8 * 3600, alpha=1.0, runs=12, counts=(2, 4, 8)))
FOUR = ResourceVector(cpu=4, memory=16 * GiB, gpu=4)


def test_the_log_table_says_why_the_gpu_count_is_what_it_is():
    fixed = prediction_table(plan_stage(FOUR, FOUR, SATURATED, SizingPolicy(gpu_types=GPU_TYPES)))
    assert "GPU type A100-40GB" in fixed.splitlines()[0]  # 60 GiB over 4 GPUs, +10%: 16.5 GiB each
    assert "GPUs: 4, the user's count (the job's world size)" in fixed
    assert "recommendation for the next run" in fixed and "8 GPUs would take about 1.0 h" in fixed
    gpu_row = next(line for line in fixed.splitlines() if line.startswith("gpu "))
    assert gpu_row.split()[-2:] == ["4", "4"]

    plan = plan_stage(FOUR, FOUR, SATURATED, SizingPolicy(gpu_types=GPU_TYPES, elastic=ElasticGpus(1, 8)))
    elastic = prediction_table(plan)
    assert "elastic GPUs [1, 8]: 4, from the predicted utilisation upper 3.95" in elastic
    assert "elastic: 8 GPUs instead of 4 (within the declared [1, 8])" in elastic and "expected 1.0 h" in elastic
    assert plan.size.limits.gpu == 8
    record = plan.to_dict()
    assert record["allocated"]["limits"]["nvidia.com/gpu"] == "8"
    assert record["allocated"]["gpu_advice"]["kind"] == "decision" and record["allocated"]["gpu_advice"]["gpus"] == 8


def test_a_mig_plan_shows_its_profile_and_resource():
    profile = PredictedProfile({"gpu_memory": ResourceEstimate(3 * GiB, 5 * GiB)}, coverage=0.99)
    plan = plan_stage(ONE_GPU, ONE_GPU, profile, SizingPolicy(gpu_types=GPU_TYPES))
    table = prediction_table(plan)
    assert "MIG profile 1g.10gb (nvidia.com/mig-1g.10gb)" in table.splitlines()[0]
    record = plan.to_dict()["allocated"]
    assert record["mig"] == "1g.10gb" and record["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert "nvidia.com/gpu" not in record["limits"] and record["gpu_type"] is None


def test_shadow_mode_still_logs_the_recommendation_it_does_not_apply():
    plan = plan_stage(FOUR, FOUR, SATURATED, SizingPolicy(elastic=ElasticGpus(1, 8)), "shadow")
    assert plan.size.limits.gpu == 4
    assert any(r.startswith("shadow mode, not applied: elastic: 8 GPUs") for r in plan.reasons())


def test_table_lists_each_resource_with_prediction_and_request():
    table = prediction_table(plan_stage(REQ, LIM, PROFILE, SizingPolicy()))
    lines = table.splitlines()
    assert lines[0].startswith("sizing: predicted")
    memory = next(line for line in lines if line.startswith("memory"))
    assert "500Mi" in memory and "800Mi" in memory and "2Gi" in memory and "8Gi" in memory and "880Mi" in memory
    assert not any(line.startswith("gpu ") for line in lines)  # nothing asked, nothing predicted


HOST = ResourceVector(cpu=2, memory=16 * GiB)


@pytest.mark.parametrize("mode, requested, limited, start, bound", [
    # adaptive: start at the policy's requests, resize up to the user's limits
    ("adaptive", REQ, LIM, (0.8, 500 * MiB), {"cpu": 2, "memory": 8 * GiB}),
    # shadow: the user's limits throughout, bounded by them
    ("shadow", REQ, LIM, (2, 8 * GiB), {"cpu": 2, "memory": 8 * GiB}),
    # shadow without limits: the requests, bounded by the host
    ("shadow", REQ, ResourceVector(), (1, 2 * GiB), {"cpu": 2, "memory": 16 * GiB}),
    # nothing asked at all: the host
    ("shadow", ResourceVector(), ResourceVector(), (2, 16 * GiB), {"cpu": 2, "memory": 16 * GiB}),
])
def test_local_allocation(mode, requested, limited, start, bound):
    from airflow_adaptive.logic.stage_plan import local_allocation

    first, maximum = local_allocation(plan_stage(requested, limited, PROFILE, SizingPolicy(), mode), HOST)
    assert (first.cpu, first.memory) == pytest.approx(start)
    assert maximum == pytest.approx(bound)


def test_local_allocation_within_the_policy_maximum_but_never_below_the_start():
    from airflow_adaptive.logic.stage_plan import local_allocation

    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "shadow")
    _, maximum = local_allocation(plan, HOST, ResourceVector(cpu=1, memory=4 * GiB))
    assert maximum == pytest.approx({"cpu": 2, "memory": 8 * GiB})  # the start (the user's limits) wins
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), "adaptive")
    _, maximum = local_allocation(plan, HOST, ResourceVector(cpu=1.5, memory=4 * GiB))
    assert maximum == pytest.approx({"cpu": 1.5, "memory": 4 * GiB})


# --- sizes an earlier try could not get in place start the next one ----------------------------

def _plan(deferred, **policy):
    return plan_stage(REQ, LIM, PROFILE, SizingPolicy(**policy), deferred=deferred)


def test_a_deferred_increase_is_where_the_next_try_starts():
    first = _plan({})
    plan = _plan({"memory": 3 * GiB, "cpu": 0.5})
    assert plan.size.limits.memory == 3 * GiB > first.size.limits.memory
    assert plan.size.requests.memory == first.size.requests.memory  # Burstable: the request is kept
    assert plan.size.limits.cpu == first.size.limits.cpu  # a smaller deferred size changes nothing
    assert "earlier try could not get in place" in plan.escalation


def test_a_deferred_size_never_passes_the_users_limit():
    assert _plan({"memory": 64 * GiB}).size.limits.memory == LIM.memory


def test_guaranteed_moves_request_with_limit_and_shadow_only_says_so():
    plan = _plan({"memory": 3 * GiB}, preset="guaranteed")
    assert plan.size.requests.memory == plan.size.limits.memory == 3 * GiB
    # Shadow runs at the user's own size: a deferred size below the user's limit changes nothing.
    shadow = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), mode="shadow", deferred={"memory": 3 * GiB})
    assert shadow.size == plan_stage(REQ, LIM, PROFILE, SizingPolicy(), mode="shadow").size


def test_the_task_log_table_lists_the_predicted_phases_and_xcom_holds_them():
    from dataclasses import replace

    from airflow_adaptive.domain.profile import PhaseNeed
    from airflow_adaptive.domain.stage_run import sizing_params

    phases = (PhaseNeed(0, 120, 200 * MiB, 300 * MiB), PhaseNeed(120, 600, 500 * MiB, 800 * MiB))
    plan = plan_stage(REQ, LIM, replace(PROFILE, phases={"memory": phases}), SizingPolicy())
    table = prediction_table(plan)
    assert "predicted memory phases (from; median / upper): 0 s: 200Mi / 300Mi, 120 s: 500Mi / 800Mi" in table
    assert plan.to_dict()["predicted"]["phases"]["memory"][1] == {"start_s": 120, "end_s": 600, "median": 500 * MiB,
                                                                 "upper": 800 * MiB}
    assert sizing_params({}, plan.profile, {}, {})["predicted.memory.phases"] == "0:2.09715e+08:3.14573e+08 120:5.24288e+08:8.38861e+08"


def test_a_profile_with_phases_starts_the_stage_at_its_first_phase_when_it_can_be_resized():
    from dataclasses import replace

    from airflow_adaptive.domain.profile import PhaseNeed

    phases = (PhaseNeed(0, 120, 200 * MiB, 300 * MiB), PhaseNeed(120, 600, 500 * MiB, 800 * MiB))
    profile = replace(PROFILE, phases={"memory": phases})
    plan = plan_stage(REQ, LIM, profile, SizingPolicy())
    assert plan.size.limits.memory == pytest.approx(330 * MiB)  # 300 MiB + 10%, not the 800 MiB upper
    assert any("first predicted phase" in r for r in plan.reasons())
    assert plan.profile.phases == profile.phases  # the monitor gets every phase, to raise ahead of the next
    fixed = plan_stage(REQ, LIM, profile, SizingPolicy(), in_place=False)  # no resizing: sized for the peak
    assert fixed.size.limits.memory == pytest.approx(880 * MiB) and not fixed.resizable
    shadow = plan_stage(REQ, LIM, profile, SizingPolicy(), "shadow")
    assert shadow.policy_size.limits.memory == pytest.approx(880 * MiB)


def test_the_task_log_says_what_a_cold_start_was_compared_with():
    from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate

    note = "cold start: no runs of this stage yet; predicted from 12 runs of 3 stage(s) with model_family=resnet: memory ~ (parameters x batch_size)^0.93"
    profile = PredictedProfile({"memory": ResourceEstimate(2 * 2**30, 3 * 2**30)}, 0.99, cold_start=True, notes=(note,))
    plan = plan_stage(ResourceVector(1, 4 * 2**30), ResourceVector(2, 8 * 2**30), profile, SizingPolicy())
    table = prediction_table(plan)
    assert note in table and "sized from similar stages" in table
    assert plan.size.limits.memory == pytest.approx(3.3 * 2**30)  # the cold prediction, not the 8 GiB limit


@pytest.mark.parametrize("requested, limited, limit_range, want_req, want_lim, says", [
    # nothing given, no LimitRange: the stated default request, no limit
    (ResourceVector(), ResourceVector(), None, ResourceVector(1, GiB), ResourceVector(), "stated default"),
    # the LimitRange's defaultRequest and default, as the API server would apply them
    (ResourceVector(), ResourceVector(), "both", ResourceVector(0.5, 256 * MiB), ResourceVector(1, 512 * MiB), "LimitRange lr"),
    # only a default (limits): the API server makes it the request too
    (ResourceVector(), ResourceVector(), "limits", ResourceVector(1, 512 * MiB), ResourceVector(1, 512 * MiB), "LimitRange lr"),
    # a GPU-only request keeps its GPUs and gets the default cpu/memory
    (ResourceVector(gpu=2), ResourceVector(gpu=2), None, ResourceVector(1, GiB, 2), ResourceVector(gpu=2), "stated default"),
    # anything given is the user's: untouched
    (ResourceVector(memory=GiB), ResourceVector(), "both", ResourceVector(memory=GiB), ResourceVector(), None),
    (ResourceVector(), ResourceVector(cpu=2), None, ResourceVector(), ResourceVector(cpu=2), None),
])
def test_a_stage_with_no_request_and_no_prediction_gets_a_default(requested, limited, limit_range, want_req, want_lim, says):
    from airflow_adaptive.logic.capacity import LimitRangeBounds
    from airflow_adaptive.logic.stage_plan import default_request

    ranges = {None: None,
              "both": LimitRangeBounds("lr", default=ResourceVector(1, 512 * MiB), default_request=ResourceVector(0.5, 256 * MiB)),
              "limits": LimitRangeBounds("lr", default=ResourceVector(1, 512 * MiB))}
    req, lim, why = default_request(requested, limited, ranges[limit_range])
    assert req == want_req and lim == want_lim
    assert (why is None) if says is None else (says in why)


# --- ephemeral storage: sized at start, escalated after an eviction -------------------------

from airflow_adaptive.logic.sizing import StorageSize  # noqa: E402
from airflow_adaptive.domain.quantities import format_bandwidth as format_rate  # noqa: E402

STORAGE_PROFILE = PredictedProfile({**PROFILE.resources, "ephemeral_storage": ResourceEstimate(30 * MiB, 50 * MiB)},
                                   coverage=0.99, model_version="3")


def evicted(limit, try_number=1):
    return OomEvent(time=1.0, container="base", limit_bytes=limit, try_number=try_number, kind="ephemeral_storage")


@pytest.mark.parametrize("user,mode,events,preset,req,limit,says", [
    # first try: the floor (64 MiB) above the predicted 55 MiB
    (StorageSize(), "adaptive", [], "burstable", 64 * MiB, 64 * MiB, None),
    # evicted at 64 MiB: x2
    (StorageSize(), "adaptive", [evicted(64 * MiB)], "burstable", 64 * MiB, 128 * MiB, "retry with 128Mi (x2)"),
    # the last eviction counts
    (StorageSize(), "adaptive", [evicted(64 * MiB), evicted(128 * MiB, 2)], "burstable", 64 * MiB, 256 * MiB, "try 2 was evicted"),
    # within the user's limit
    (StorageSize(0, 100 * MiB), "adaptive", [evicted(64 * MiB)], "burstable", 64 * MiB, 100 * MiB, "capped at the user's"),
    # already at the user's limit: says what to do, stays there
    (StorageSize(0, 64 * MiB), "adaptive", [evicted(64 * MiB)], "burstable", 64 * MiB, 64 * MiB, "write less"),
    # guaranteed: request follows the limit
    (StorageSize(), "adaptive", [evicted(64 * MiB)], "guaranteed", 128 * MiB, 128 * MiB, "retry with 128Mi"),
])
def test_an_ephemeral_storage_eviction_raises_the_next_tries_limit(user, mode, events, preset, req, limit, says):
    plan = plan_stage(REQ, LIM, STORAGE_PROFILE, SizingPolicy(preset=preset), mode, earlier_ooms=events, storage=user)
    assert plan.size.ephemeral.request == pytest.approx(req) and plan.size.ephemeral.limit == pytest.approx(limit)
    if says:
        assert says in plan.escalation
    else:
        assert not plan.escalation
    # memory is not touched by a storage eviction, nor its floor
    assert plan.size.limits.memory == pytest.approx(880 * MiB) and plan.memory_floor == 0
    assert plan.to_dict()["allocated"]["limits"]["ephemeral-storage"]


def test_an_eviction_of_the_users_own_size_retries_within_the_users_limit():
    plan = plan_stage(REQ, LIM, None, SizingPolicy(), fallback="MLflow down", earlier_ooms=[evicted(4 * GiB)],
                      storage=StorageSize(GiB, 4 * GiB))
    assert plan.size.ephemeral == StorageSize(GiB, 4 * GiB)  # the user's size: already at its bound
    assert "already the user's ephemeral-storage limit 4Gi" in plan.escalation
    plan = plan_stage(REQ, LIM, None, SizingPolicy(), fallback="MLflow down", earlier_ooms=[evicted(GiB)],
                      storage=StorageSize(0, 0))  # evicted at a limit the user did not give (another container's): no bound
    assert plan.size.ephemeral == StorageSize(2 * GiB, 2 * GiB)  # a user's size: the request follows, as memory


def test_shadow_says_what_it_would_do_after_an_eviction():
    plan = plan_stage(REQ, LIM, STORAGE_PROFILE, SizingPolicy(), "shadow", earlier_ooms=[evicted(64 * MiB)],
                      storage=StorageSize(GiB, 2 * GiB))
    assert plan.size.ephemeral == StorageSize(GiB, 2 * GiB)  # the user's, as written
    assert plan.escalation.startswith("shadow mode, not applied: try 1 was evicted")
    assert "retry with 128Mi (x2) (would use 2Gi ephemeral-storage)" in plan.escalation  # the user's 2Gi is more


def test_a_kernel_oom_and_an_eviction_are_escalated_each_on_its_own():
    kill = OomEvent(time=1.0, container="base", limit_bytes=880 * MiB, try_number=1)
    plan = plan_stage(REQ, LIM, STORAGE_PROFILE, SizingPolicy(), earlier_ooms=[kill, evicted(64 * MiB, 2)], storage=StorageSize())
    assert plan.size.limits.memory == pytest.approx(1760 * MiB) and plan.size.ephemeral.limit == 128 * MiB
    assert "OOM-killed" in plan.escalation and "evicted for ephemeral storage" in plan.escalation


def test_off_and_unknown_storage_leave_the_users_own():
    assert plan_stage(REQ, LIM, STORAGE_PROFILE, SizingPolicy(), "off", storage=StorageSize(GiB, 0)).size.ephemeral == StorageSize(GiB, 0)
    assert not plan_stage(REQ, LIM, STORAGE_PROFILE, SizingPolicy()).size.ephemeral.is_set


@pytest.mark.parametrize("rate,text", [(12.5 * MiB, "12.5 MiB/s"), (800 * 1024, "800 KiB/s"), (1000 * 1024, "1000 KiB/s"),
                                       (12, "12 B/s"), (3 * GiB, "3 GiB/s"), (150.4 * MiB, "150 MiB/s")])
def test_rates_are_bytes_per_second(rate, text):
    assert format_rate(rate) == text


def test_the_table_shows_the_new_resources_and_hides_empty_rows():
    est = ResourceEstimate(10 * MiB, 12.5 * MiB)
    profile = PredictedProfile({**STORAGE_PROFILE.resources, "disk_read": est, "network_tx": ResourceEstimate(0.5 * MiB, MiB)},
                               coverage=0.99)
    plan = plan_stage(REQ, LIM, profile, SizingPolicy(), storage=StorageSize(0, GiB))
    rows = {line.split()[0]: line.split() for line in prediction_table(plan).splitlines()[3:] if line and not line.startswith(" ")}
    assert rows["disk_read"][1:] == ["10", "MiB/s", "12.5", "MiB/s", "-", "-", "-", "-"]
    assert rows["network_tx"][1:5] == ["512", "KiB/s", "1", "MiB/s"]
    assert rows["ephemeral_storage"][1:] == ["30Mi", "50Mi", "-", "1Gi", "64Mi", "64Mi"]
    assert "disk_write" not in rows and "network_rx" not in rows and "gpu" not in rows
    assert any("ephemeral-storage: request 64 MiB" in line for line in prediction_table(plan).splitlines())


def test_the_table_shows_the_users_own_storage_without_a_prediction():
    plan = plan_stage(REQ, LIM, PROFILE, SizingPolicy(), storage=StorageSize(GiB, 2 * GiB))
    row = next(line for line in prediction_table(plan).splitlines() if line.startswith("ephemeral_storage"))
    assert row.split()[1:] == ["-", "-", "1Gi", "2Gi", "1Gi", "2Gi"]
    assert "ephemeral_storage" not in prediction_table(plan_stage(REQ, LIM, PROFILE, SizingPolicy()))
