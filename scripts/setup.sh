#!/usr/bin/env bash
# Create .venv in the repo root and install the project with its test and deep-learning extras.
# Idempotent: a second run only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip uv
.venv/bin/uv pip install --quiet --python .venv/bin/python -e ".[test,dl]"
# Headless Chromium for the browser tests (tests/browser): Debian's package, which Playwright drives
# with executable_path=/usr/bin/chromium (no browser download at test time). Installed as root only.
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends chromium
    else
        echo "setup: /usr/bin/chromium is missing (the browser tests need it): as root, apt-get install chromium" >&2
    fi
fi
# Byte-compile the environment once. Shells that set PYTHONDONTWRITEBYTECODE would otherwise
# recompile scikit-learn, MLflow and Airflow in every fresh process: each pipeline stage and
# each `airflow dags test` paid 4-7 s for it on this 2-core machine. compileall skips what is
# already compiled, so a second run costs seconds.
.venv/bin/python -m compileall -q -j 2 .venv/lib/python3*/site-packages airflow_adaptive >/dev/null 2>&1 || true
