"""The project's own code uses no deprecated Airflow (or other) API that warns on import.

In a fresh interpreter (a module warns only on its first import), with every warning recorded:

1. every module of ``airflow_adaptive`` is imported, and every DAG file in ``dags/`` is run;
2. every ``import airflow...`` / ``from airflow... import`` statement of those files that sits
   inside a function (imported lazily, so step 1 never runs it) is run on its own, compiled under
   its file's name and line, so a warning it raises points at that line.

Deprecation warnings attributed to a file of this repository fail the test. Airflow warns of a
deprecated import with ``DeprecatedImportWarning``, a ``FutureWarning`` (``airflow.exceptions.
AirflowFailException`` -> ``airflow.sdk.exceptions``), and of removals with
``RemovedInAirflow4Warning``, a ``DeprecationWarning``: all three families count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = r'''
import ast, importlib, importlib.util, json, pkgutil, sys, warnings
from pathlib import Path

repo = Path(sys.argv[1])
out = []

def lazy_airflow_imports(path):
    """Import statements naming airflow (not airflow_adaptive) below the module's top level."""
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if id(node) in top:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        if any(n == "airflow" or n.startswith("airflow.") for n in names):
            yield node

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    # Airflow, configuring itself on import, replaces warnings.showwarning (to log warnings) and
    # may add filters of its own: either would hide a warning from this record. The interpreter
    # hands every warning that passes the filters to warnings._showwarnmsg: record there.
    warnings._showwarnmsg = caught.append
    warnings.filterwarnings = warnings.simplefilter = lambda *args, **kwargs: None
    import airflow_adaptive
    files = []
    for info in pkgutil.walk_packages(airflow_adaptive.__path__, "airflow_adaptive."):
        module = importlib.import_module(info.name)
        files.append(Path(module.__file__))
    for dag in sorted((repo / "dags").glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"dag_probe_{dag.stem}", dag)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        files.append(dag)
    statements = 0
    for path in files:
        for node in lazy_airflow_imports(path):
            exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), {"__name__": "probe"})
            statements += 1

for w in caught:
    if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
        out.append({"category": w.category.__name__, "file": str(w.filename), "line": w.lineno,
                    "message": str(w.message)})
print(json.dumps({"modules": len(files), "lazy_statements": statements, "warnings": out}))
'''


def probe(tmp_path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(REPO)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"the import probe failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def ours(filename: str) -> bool:
    path = Path(filename).resolve()
    return path.is_relative_to(REPO) and not path.is_relative_to(REPO / ".venv")


def test_no_deprecation_warning_points_at_project_code(tmp_path):
    found = probe(tmp_path)
    # The probe must have seen the package, the DAGs and the lazy imports, or it proves nothing.
    assert found["modules"] > 50 and found["lazy_statements"] > 5, found
    mine = [w for w in found["warnings"] if ours(w["file"])]
    assert not mine, "deprecated API used by the project:\n" + "\n".join(
        f"{Path(w['file']).relative_to(REPO)}:{w['line']}: {w['category']}: {w['message']}" for w in mine)
