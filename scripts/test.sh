#!/usr/bin/env bash
# Install, then run the whole test suite: tests/, the `>>>` examples of src/hamrah (--doctest-modules) and
# ruff and mypy (tests/test_tooling.py); the settings are in pyproject.toml. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest -q "$@"
