"""Test and benchmark harnesses, outside the product package (ARCHITECTURE.md: "keep them where a
reader sees they serve tests and benchmarks"); not installed with ``airflow-adaptive``.

| module | what |
|---|---|
| ``local_cluster`` | a real control plane on loopback, kwok's emulated kubelets (``emulation/stages.yaml``): ``tests/kubernetes``, ``benchmarks/k8s_scale.py`` |
| ``local_node`` | a real node (kubelet, containerd, runc, CNI) in a network namespace: ``tests/kubelet``, ``benchmarks/real_node.py`` |
| ``netns_forward`` | the host-loopback forwarder ``local_node`` runs inside the node's namespace |

Importable from the repository root (``python -m pytest`` puts it on ``sys.path``; the
benchmarks add it themselves). The harness may import ``airflow_adaptive``; the product never
imports the harness (the ``no-harness`` contract in ``pyproject.toml``, checked by
``tests/test_layers.py``).
"""
