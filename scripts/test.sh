#!/usr/bin/env bash
# The project's tests: Rust unit, integration and doc tests, then the Python suites.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh torch
source scripts/env.sh
cargo test --release
# The GPU code (feature `cuda`) must build everywhere; its tests need a GPU and run on
# the device machine (outputs in cuda/results/), its doc tests run here.
cargo build --release --features cuda --tests --examples
cargo test --release --features cuda --doc
# torch is installed by `setup.sh torch`: its tests must run, not skip.
BLOCKRES_REQUIRE_TORCH=1 "$root/.venv/bin/python" -m pytest -q onnx/tests benches/peer_test.py
