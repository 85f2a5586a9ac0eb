#!/usr/bin/env bash
# The whole GPU-machine run (tests, sanitizers, per-kernel times, benchmarks, the ONNX
# Runtime op on the GPU) in one call. The machine has no Rust: build here and carry the
# binaries in one folder, e.g. .dev/final (ignored by git):
#
#   cargo build --release --features cuda --lib --example gpu_bench --test gpu
#   strip -o .dev/final/gpu_test  target/release/deps/gpu-<hash>
#   strip -o .dev/final/gpu_bench target/release/examples/gpu_bench
#   strip -o .dev/final/libblockres.so target/release/libblockres.so
#   there (repo root): bash cuda/device_run.sh .dev/final
#
# Writes 8 logs to $OUT (machine, gpu_tests, sanitizers, ncu, bench_blockres,
# bench_torch, ort_gpu_tests, ort_gpu_timing) and prints a summary.
set -o pipefail
bin=$(bash "$(dirname "$0")/unpack_bins.sh" "${1:?usage: bash cuda/device_run.sh BINDIR}")
root=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/blockres_device_run}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader; } | tee $OUT/machine.txt
echo "== gpu tests"
timeout 200 $bin/gpu_test --test-threads=1 --nocapture > $OUT/gpu_tests.txt 2>&1
grep -E "^test .*(ok|FAILED)$|panicked|test result" $OUT/gpu_tests.txt | tail -10
grep -E "rel err" $OUT/gpu_tests.txt | awk '{print $1, $NF}' | sort -k2 -g | awk '$1 ~ /^(f32|f16|bf16)$/ {m[$1]=$2} END {for (k in m) print "max rel err", k, m[k]}'
echo "== compute-sanitizer (memcheck, racecheck, synccheck)"
for tool in memcheck racecheck synccheck; do
  echo "--- $tool" >> $OUT/sanitizers.txt
  timeout 150 compute-sanitizer --tool $tool $bin/gpu_test small_mixed_case non_finite --test-threads=1 >> $OUT/sanitizers.txt 2>&1
  echo "$tool: $(tail -1 $OUT/sanitizers.txt)"
done
echo "== per kernel (Nsight Compute gpu__time_duration, automatic b)"
for n in 4096 32768; do
  timeout 120 ncu --launch-skip 40 --launch-count 8 --metrics gpu__time_duration.sum $bin/gpu_bench --blocks 0 $n > /tmp/ncu_$n.txt 2>&1
  { echo "--- n=$n"; cat /tmp/ncu_$n.txt; } >> $OUT/ncu.txt
  echo "n=$n:"; grep -E "^  [a-z_0-9]+|gpu__time_duration" /tmp/ncu_$n.txt | paste - - | awk '{print "  " $1, $(NF-1), $NF}'
done
echo "== bench: $bin/gpu_bench --dump /tmp/dump --block 64; python3 cuda/bench_torch.py --dump /tmp/dump --block 64"
timeout 200 $bin/gpu_bench --dump /tmp/dump --block 64 > $OUT/bench_blockres.txt 2>&1; tail -10 $OUT/bench_blockres.txt
timeout 300 python3 $root/cuda/bench_torch.py --dump /tmp/dump --block 64 > $OUT/bench_torch.txt 2>&1; tail -8 $OUT/bench_torch.txt
echo "== ONNX Runtime op on the GPU"
timeout 400 bash $root/cuda/ort_gpu_check.sh $bin/libblockres.so 2>&1 | tail -14
