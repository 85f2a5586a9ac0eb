#!/usr/bin/env bash
# The main job: the trained entity-tracking models (onnx/models/tracking: block and
# dense ChaCAL, a compact softmax Transformer) in onnxruntime on CPU with the blockres
# op, on freshly generated sequences at 1×, 4× and 16× their training length; before
# it, the kernels' own dense-vs-block table on synthetic inputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo run --release --quiet
echo
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --quiet --lib
"$root/.venv/bin/python" onnx/tracking/evaluate.py "$@"
