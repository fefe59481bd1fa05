#!/usr/bin/env bash
# Lint, format check and type check, as tests/test_tooling.py runs them (configs in pyproject.toml).
#   bash scripts/lint.sh          check only: ruff check, ruff format --check, mypy
#   bash scripts/lint.sh --fix    apply ruff's safe fixes and the formatter, then check
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] || { echo "no .venv here: run bash scripts/install.sh first" >&2; exit 2; }
. .venv/bin/activate
paths=(src tests benchmarks examples)
if [ "${1:-}" = "--fix" ]; then
  ruff check --fix "${paths[@]}" || true  # what --fix cannot fix is reported by the check below
  ruff format "${paths[@]}"
elif [ -n "${1:-}" ]; then
  echo "usage: bash scripts/lint.sh [--fix]" >&2
  exit 2
fi
status=0
ruff check "${paths[@]}" || status=1
ruff format --check "${paths[@]}" || status=1
mypy || status=1  # the packages listed in [tool.mypy] of pyproject.toml
exit $status
