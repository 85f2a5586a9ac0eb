#!/usr/bin/env bash
# The GPU-machine check after a kernel or launcher change, in one call: the GPU tests
# (full path and decoder), compute-sanitizer on small cases, and the benchmarks (causal and
# bidirectional, d = 64 and 128) with one PyTorch SDPA hop in the same call. Build here and carry the binaries in one folder
# (ignored by git): `bash cuda/stage_bins.sh .dev/chk`, then there (repo root):
#   bash cuda/gpu_check.sh .dev/chk
#
# Logs go to $OUT; a summary is printed last.
set -o pipefail
bin=$(bash "$(dirname "$0")/unpack_bins.sh" "${1:?usage: bash cuda/gpu_check.sh BINDIR}")
OUT=${OUT:-/tmp/blockres_gpu_check}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > "$OUT/machine.txt"
timeout 200 "$bin/gpu_test" --test-threads=1 > "$OUT/gpu_tests.txt" 2>&1
# The 16-bit cases again with the CUDA-core local kernels (local.cu, local_bidir).
BLOCKRES_GPU_LOCAL=general timeout 200 "$bin/gpu_test" f16_matches bf16_matches small_mixed \
  --test-threads=1 > "$OUT/gpu_tests_general.txt" 2>&1
timeout 200 "$bin/gpu_decode" --test-threads=1 > "$OUT/gpu_decode_tests.txt" 2>&1
for tool in memcheck racecheck synccheck; do
  echo "--- $tool" >> "$OUT/sanitizers.txt"
  timeout 150 compute-sanitizer --tool $tool "$bin/gpu_test" small_mixed_case non_finite \
    --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
done
echo "--- memcheck (decoder)" >> "$OUT/sanitizers.txt"
timeout 150 compute-sanitizer --tool memcheck "$bin/gpu_decode" refused device_buffers reset \
  --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
# BASE=NAME: an earlier commit's gpu_bench in BINDIR (cuda/stage_bins.sh), timed right
# before and after the current one in this call, for same-run ratios.
if [ -n "${BASE:-}" ]; then timeout 100 "$bin/$BASE" 4096 16384 32768 65536 > "$OUT/gpu_bench_base1.txt" 2>&1; fi
timeout 150 "$bin/gpu_bench" 4096 16384 32768 65536 > "$OUT/gpu_bench.txt" 2>&1
if [ -n "${BASE:-}" ]; then timeout 100 "$bin/$BASE" 4096 16384 32768 65536 > "$OUT/gpu_bench_base2.txt" 2>&1; fi
timeout 150 "$bin/gpu_bench" --d 128 4096 16384 32768 65536 > "$OUT/gpu_bench_d128.txt" 2>&1
timeout 100 "$bin/gpu_bench" --bidirectional 4096 16384 65536 > "$OUT/gpu_bench_bidirectional.txt" 2>&1
timeout 100 "$bin/gpu_bench" --bidirectional --d 128 4096 16384 > "$OUT/gpu_bench_bidirectional_d128.txt" 2>&1
# Issue 14's bars are ratios against one SDPA hop measured in the same call.
timeout 150 python3 cuda/bench_torch.py --sdpa 4096 16384 32768 65536 > "$OUT/sdpa.txt" 2>&1
timeout 100 "$bin/gpu_decode_bench" > "$OUT/gpu_decode_bench.txt" 2>&1
echo "== summary"
cat "$OUT/machine.txt"
for f in gpu_tests gpu_tests_general gpu_decode_tests; do
  echo "$f: $(grep -E '^test result' "$OUT/$f.txt" | tail -1) $(grep -c FAILED "$OUT/$f.txt") FAILED lines"
done
grep -E "^---|ERROR SUMMARY" "$OUT/sanitizers.txt" | paste - - | sed 's/=========//'
if [ -n "${BASE:-}" ]; then echo "-- $BASE (before, after)"; tail -5 "$OUT/gpu_bench_base1.txt"; tail -5 "$OUT/gpu_bench_base2.txt"; echo "-- current"; fi
tail -7 "$OUT/gpu_bench.txt"
tail -5 "$OUT/gpu_bench_d128.txt"
tail -4 "$OUT/gpu_bench_bidirectional.txt"
tail -3 "$OUT/gpu_bench_bidirectional_d128.txt"
tail -6 "$OUT/sdpa.txt"
tail -6 "$OUT/gpu_decode_bench.txt"
