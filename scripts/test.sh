#!/usr/bin/env bash
# The project's tests: Rust unit, integration and doc tests, then the Python suites.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh torch
source scripts/env.sh
# Style and lints are part of the tests.
cargo fmt --check
cargo clippy --release --all-targets --all-features -- -D warnings
BLOCKRES_REQUIRE_ORT=1 cargo test --release
# The kernels alone, as an rlib user without the ONNX Runtime op and diagnostics builds them.
cargo check --release --no-default-features --lib
# The Rust ONNX Runtime host example runs the op in all three element types.
cargo run --release --example ort_host
# The GPU code (feature `cuda`) must build everywhere; its tests need a GPU and run on
# the device machine (outputs in results/), its doc tests run here.
cargo build --release --features cuda --tests --examples
cargo test --release --features cuda --doc
# The GPU launch planning (limits, shared memory per device) is pure, and the kernel ABI
# (every entry point and its parameter struct, read from the embedded PTX) needs no GPU.
cargo test --release --features cuda --lib -- gpu::plan gpu::module gpu::params
# The CUDA-built op library (which also registers the op for the CUDA execution
# provider) in this CPU-only onnxruntime: the CPU registration must work unchanged.
cargo build --release --features cuda --lib
mkdir -p target/cuda-lib && cp target/release/libblockres.so target/cuda-lib/
cargo build --release --lib
BLOCKRES_LIBRARY="$root/target/cuda-lib/libblockres.so" "$root/.venv/bin/python" -m pytest -q \
  onnx/tests/test_op.py onnx/tests/test_op_device.py
# torch is installed by `setup.sh torch`: its tests must run, not skip.
BLOCKRES_REQUIRE_TORCH=1 "$root/.venv/bin/python" -m pytest -q onnx/tests benches/peer_test.py
# The Python package as a wheel with the library inside, in a fresh venv.
bash scripts/test_wheel.sh
