#!/usr/bin/env bash
# Create .venv (if needed) and install hamrah with the pinned CPU build of PyTorch first,
# so that pip never pulls the multi-GB CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,ray]"  # ray: the server's Ray actor backend, tested in tests/system
