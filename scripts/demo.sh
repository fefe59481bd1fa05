#!/usr/bin/env bash
# Install, then run the main job: FedAvg on MNIST (2NN, 100 IID clients), live round log,
# summary and learning curve in runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
hamrah run configs/quickstart.toml --out runs/quickstart "$@"
