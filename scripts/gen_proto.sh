#!/usr/bin/env bash
# Regenerate the protobuf / gRPC Python modules from src/hamrah/transport/proto/fl.proto.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src --pyi_out=src src/hamrah/transport/proto/fl.proto
