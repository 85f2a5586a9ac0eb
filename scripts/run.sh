#!/usr/bin/env bash
# The main job: the CPU demo table (dense vs block on embedded synthetic inputs), then
# the same operator as an ONNX Runtime custom op in Python onnxruntime.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo run --release --quiet
echo
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet --lib
"$root/.venv/bin/python" onnx/demo.py
