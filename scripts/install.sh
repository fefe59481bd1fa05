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
python -m pip install -q -e ".[test,ray,tracking]"  # ray: the server's Ray actor backend; tracking: TensorBoard/MLflow sinks
# Headless Chromium from the distribution's packages, for the dashboard's browser test
# (tests/system/test_dashboard_live.py); never downloaded by the tests themselves.
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
      || echo "install.sh: apt-get install chromium failed: the dashboard's browser test will be skipped" >&2
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
    sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { sudo -n apt-get update -q >/dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } \
      || echo "install.sh: apt-get install chromium failed: the dashboard's browser test will be skipped" >&2
  else
    echo "install.sh: chromium not installed (needs root or sudo for apt-get): the dashboard's browser test will be skipped" >&2
  fi
fi
