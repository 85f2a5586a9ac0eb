#!/usr/bin/env bash
# The op on onnxruntime's CUDA execution provider, on the GPU machine: the tests of
# onnx/tests/test_op_cuda_ep.py, then cuda/ort_ep_bench.py (op vs SDPA, kernels vs run).
# Needs onnxruntime-gpu in /tmp/ortgpu (../shared/tools/ort-gpu/prepare.sh brings it) and
# a libblockres.so built here with `cargo build --release --features cuda --lib`:
#
#   there (repo root): bash cuda/ort_ep_check.sh .dev/ep/libblockres.so
#
# Logs go to $OUT (or /tmp/ort_ep_check): ort_ep_tests.txt, ort_ep_bench.txt.
set -uo pipefail
lib=$(readlink -f "${1:?usage: bash cuda/ort_ep_check.sh /path/to/libblockres.so}")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
logs=${OUT:-/tmp/ort_ep_check}
mkdir -p "$logs"
export PYTHONPATH=/tmp/ortgpu${PYTHONPATH:+:$PYTHONPATH} BLOCKRES_LIBRARY="$lib" BLOCKRES_CUDA_EP_TESTS=1 PYTHONUNBUFFERED=1
python3 -c 'import torch, onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())'
echo "== pytest onnx/tests/test_op_cuda_ep.py"
timeout ${EP_TEST_TIMEOUT:-150} python3 -m pytest -q -s -p no:cacheprovider -rfE onnx/tests/test_op_cuda_ep.py > "$logs/ort_ep_tests.txt" 2>&1
echo "pytest rc=$?"
grep -E "^=* ?[0-9]+ (passed|failed)|^(FAILED|ERROR)" "$logs/ort_ep_tests.txt" | head -20
grep -oE "(float32|float16|bfloat16) case [0-9]+ n=[0-9]+: rel err [0-9.e+-]+" "$logs/ort_ep_tests.txt" |
  awk '{e=$NF+0; if (e > m[$1]) m[$1]=e} END {for (t in m) printf "max rel err %-9s %.3e\n", t, m[t]}' | sort
echo "== cuda/ort_ep_bench.py"
timeout ${EP_BENCH_TIMEOUT:-120} python3 cuda/ort_ep_bench.py 16384 65536 > "$logs/ort_ep_bench.txt" 2>&1
echo "bench rc=$?"; tail -6 "$logs/ort_ep_bench.txt"
