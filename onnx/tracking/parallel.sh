#!/usr/bin/env bash
# Train several tracking models at once on one GPU (small models leave it mostly idle,
# so runs side by side cost little more than one). Each line of PLAN is
# "NAME ARGS...", ARGS going to train.py; runs land in DEST/NAME.
#   bash onnx/tracking/parallel.sh PLAN DEST
set -uo pipefail
plan=$1 dest=$2
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dest"
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
pids=()
while read -r name args; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  python3 "$here/train.py" --out "$dest/$name" $args > "$dest/$name.out" 2>&1 &
  pids+=($!)
done < "$plan"
for p in "${pids[@]}"; do wait "$p"; done
for f in "$dest"/*.out; do echo "== $(basename "$f" .out)"; grep -v Warning "$f" | tail -3; done
