#!/usr/bin/env bash
# Per-kernel roofline measurements for the causal block path (B=1, H=16, d=64, bf16,
# automatic b) with Nsight Compute: time, DRAM bytes, DRAM and SM throughput, tensor
# pipe and occupancy, one call (6 launches: means, coarse, local, 2 reduced, combine) per n.
# Usage there:
#   bash cuda/roofline_run.sh BINDIR     (BINDIR holds gpu_bench)
set -o pipefail
bin=$(bash "$(dirname "$0")/unpack_bins.sh" "${1:?usage: bash cuda/roofline_run.sh BINDIR}")
OUT=${OUT:-/tmp/roofline}
mkdir -p "$OUT"
m=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__grid_size,launch__block_size
for n in 4096 32768; do
  timeout 240 ncu --launch-skip 36 --launch-count 6 --metrics $m --csv "$bin/gpu_bench" $n > "$OUT/ncu_$n.csv" 2> "$OUT/ncu_$n.err"
  echo "n=$n: $(grep -c gpu__time_duration "$OUT/ncu_$n.csv") kernel rows"
done
timeout 120 "$bin/gpu_bench" 4096 32768 > "$OUT/bench.txt" 2>&1; tail -4 "$OUT/bench.txt"
