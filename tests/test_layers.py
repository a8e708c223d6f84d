"""The layers of ARCHITECTURE.md hold: ``lint-imports`` (import-linter, contracts in
pyproject.toml's ``[tool.importlinter]``) passes on the repository, and fails on a copy of it
with layer breaks put in (so the contracts can fail at all)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test extras (pip install -e '.[test]')")
    # --no-cache: the graph is built in well under a second, and a cache could outlive an edit.
    # COLUMNS: one contract per line, however long its name.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, f"lint-imports failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("module, line, contract", [
    ("domain/resources.py", "import mlflow", "domain is pure"),
    ("logic/sizing.py", "import subprocess", "logic is pure"),
    ("adapters/kubernetes/pod_spec.py", "from airflow_adaptive.runtime import sidecar", "layers:"),
    ("sensors/capacity.py", "from airflow_adaptive.operators import training", "Airflow surface:"),
    ("triggers/model_quality.py", "import mlflow", "through adapters only"),
    ("runtime/monitor.py", "import airflow", "no Airflow"),
    ("runtime/channels.py", "import socket", "monitor sidecar:"),
    ("demo.py", "import harness.local_cluster", "harness"),
])
def test_a_layer_break_fails_the_contracts(tmp_path, module, line, contract):
    """A copy of the package (and harness, and pyproject.toml) with one import added: lint-imports
    must fail and name the contract it breaks."""
    for name in ("airflow_adaptive", "harness"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "airflow_adaptive" / module
    target.write_text(target.read_text() + f"\n{line}  # a deliberate break\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, f"lint-imports passed with {line!r} in {module}:\n{result.stdout}"
    broken = [row for row in result.stdout.splitlines() if row.rstrip().endswith("BROKEN")]
    assert any(contract in row for row in broken), f"expected the {contract!r} contract broken:\n{result.stdout}"
