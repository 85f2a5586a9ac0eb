#!/usr/bin/env bash
# One GPU-machine call for this round (2026-12-02): the GPU tests (shared-memory limit
# now read from the device), the GPU decoder's tests and sanitizer, and its step
# benchmark. Build here and carry the binaries in one folder (ignored by git):
#
#   cargo build --release --features cuda --test gpu --test gpu_decode --example gpu_decode_bench
#   strip -o .dev/dec/gpu_test target/release/deps/gpu-<hash>
#   strip -o .dev/dec/gpu_decode target/release/deps/gpu_decode-<hash>
#   strip -o .dev/dec/gpu_decode_bench target/release/examples/gpu_decode_bench
#   there: bash cuda/decode_run.sh .dev/dec
set -o pipefail
bin=$(readlink -f "${1:?usage: bash cuda/decode_run.sh BINDIR}")
OUT=${OUT:-/tmp/blockres_decode_run}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee "$OUT/machine.txt"
echo "== gpu tests"
timeout 200 "$bin/gpu_test" --test-threads=1 > "$OUT/gpu_tests.txt" 2>&1
grep -E "FAILED|panicked|test result" "$OUT/gpu_tests.txt" | tail -6
echo "== gpu decode tests"
timeout 200 "$bin/gpu_decode" --test-threads=1 --nocapture > "$OUT/gpu_decode_tests.txt" 2>&1
grep -E "FAILED|panicked|test result" "$OUT/gpu_decode_tests.txt" | tail -8
echo "== compute-sanitizer memcheck (decode tests)"
timeout 200 compute-sanitizer --tool memcheck "$bin/gpu_decode" refused device_buffers reset --test-threads=1 > "$OUT/gpu_decode_memcheck.txt" 2>&1
grep -E "ERROR SUMMARY|test result" "$OUT/gpu_decode_memcheck.txt" | tail -3
echo "== decode step benchmark"
timeout 200 "$bin/gpu_decode_bench" > "$OUT/gpu_decode_bench.txt" 2>&1
tail -16 "$OUT/gpu_decode_bench.txt"
