#!/usr/bin/env bash
# The project's tests: Rust unit, integration and doc tests, then the Python suites.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
source scripts/env.sh
cargo test --release
"$root/.venv/bin/python" -m pytest -q onnx/tests benches/peer_test.py
