#!/usr/bin/env bash
# Take the screenshots of docs/dashboard.md with headless Chromium: a live server (configs/server_dashboard.toml's
# sections, in a temporary folder) and a fleet of 8 devices for the overview, rounds and devices pages, then a
# learning-rate sweep (FedProx's synthetic(1,1), logistic regression) under `hamrah dashboard` for the comparisons page.
#   bash scripts/dashboard_screenshots.sh [docs/img]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
IMG=${1:-docs/img}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
shot() {  # URL FILE
  chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1000 --timeout=8000 \
    --user-data-dir="$W/profile" --screenshot="$2" "$1" >/dev/null 2>&1
  echo "wrote $2"
}
hamrah tokens "$W/devices.txt" --count 12 --server-file "$W/devices.sha256" >/dev/null
hamrah tokens "$W/operator.txt" --count 1 --server-file "$W/operator.sha256" >/dev/null
sed -e "s#../runs/dash/#$W/#" -e "s#^port = 8765#port = 18790#" configs/server_dashboard.toml > "$W/server.toml"
hamrah server --config "$W/server.toml" --state "$W/state" --port 50991 >"$W/server.log" 2>&1 &
hamrah fleet --server 127.0.0.1:50991 --devices 8 --config "$W/server.toml" --tokens-file "$W/devices.txt" \
  --stores "$W/stores" --unplug 0.05 >"$W/fleet.log" 2>&1 &
until [ -f "$W/state/metrics.jsonl" ] && [ "$(wc -l < "$W/state/metrics.jsonl")" -ge 12 ]; do sleep 1; done
TOKEN=$(head -1 "$W/operator.txt")
for page in overview rounds devices; do
  shot "http://127.0.0.1:18790/?token=$TOKEN#$page" "$IMG/dashboard_$page.png"
done
kill %1 %2 2>/dev/null || true
cat > "$W/sweep.toml" <<TOML
[data]
dataset = "synthetic_1_1"
partition = "natural"
num_clients = 30
[model]
name = "logreg"
[algorithm]
name = "fedavg"
client_fraction = 0.2
local_epochs = 1
batch_size = 10
lr = 0.05
[run]
rounds = 40
seed = 0
TOML
hamrah sweep "$W/sweep.toml" --lrs 0.003,0.01,0.03 --out "$W/runs/sweep" >/dev/null
COMPARE=sweep/lr_0.003,sweep/lr_0.01,sweep/lr_0.03
if [ -f runs/lab_adaptive/rows.jsonl ]; then  # docs/security.md's adaptive lab, when this checkout has run it
  mkdir -p "$W/runs/lab" && cp runs/lab_adaptive/rows.jsonl runs/lab_adaptive/lab.json "$W/runs/lab/" && COMPARE=$COMPARE,lab
fi
hamrah dashboard "$W/runs" --port 18791 >/dev/null &
sleep 2
shot "http://127.0.0.1:18791/?run=sweep/lr_0.01&compare=$COMPARE#compare" "$IMG/dashboard_compare.png"
