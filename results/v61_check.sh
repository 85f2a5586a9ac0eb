#!/usr/bin/env bash
# v61 (device), written 2026-12-07 (third session): the measurements v60 did not reach,
# on main's kernels (unchanged since f43d381): timings with SDPA in the same call, per-kernel
# Nsight Compute at 4096 and 32768 with DRAM bytes (the per-stage roofline table), the
# bidirectional standing, block sweeps, the fused local kernel's full profile at 4096.
# Staging, here: bash cuda/stage_bins.sh .dev/chk; cp results/v61_check.sh .dev/chk/v61.sh
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/v61.sh, under `timeout`.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s/%s:%s ", $2, $3, $5}'; }
echo "--- main, twice"
for r in 1 2; do
  echo "d64.$r: $(timeout 40 $B 4096 16384 32768 65536 | tee -a $OUT/bench.txt | row)"
  echo "d128.$r: $(timeout 40 $B --d 128 4096 32768 65536 | tee -a $OUT/bench.txt | row)"
done
grep -m1 -i 'copy' $OUT/bench.txt
echo "--- SDPA"; timeout 150 python3 cuda/bench_torch.py --sdpa 4096 16384 32768 > $OUT/sdpa.txt 2>&1
grep -iE "sdpa|^ *\|? *[0-9]" $OUT/sdpa.txt | head -20
echo "--- bidirectional"; timeout 60 $B --bidirectional 4096 16384 65536 | tee $OUT/bidir.txt | grep -E "^\|"
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,launch__block_size,dram__bytes.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
for n in 4096 32768; do
  BLOCKRES_GPU_GROUPS=1 timeout 90 ncu --clock-control none --launch-skip 30 --launch-count 6 \
    --metrics $MI --csv $B $n > $OUT/ncu_causal_$n.csv 2>> $OUT/ncu.err
done
BLOCKRES_GPU_GROUPS=1 timeout 90 ncu --clock-control none --launch-skip 30 --launch-count 12 \
  --metrics $MI --csv $B --bidirectional 16384 > $OUT/ncu_bidir_16384.csv 2>> $OUT/ncu.err
python3 -c "import pathlib, sys; sys.path.insert(0, 'cuda'); import perf_summary; perf_summary.kernels(pathlib.Path(sys.argv[1]))" $OUT
echo "--- d128 blocks"; timeout 60 $B --d 128 --blocks 0,64,96,128 16384 32768 65536 | grep -E "^\|"
echo "--- short blocks"; timeout 40 $B --blocks 0,32,48,96,128 4096 8192 | grep -E "^\|"
timeout 90 ncu --clock-control none -k regex:local_tc --launch-skip 5 --launch-count 1 --set full \
  --import-source no -o "$OUT/local_tc_4096" $B 4096 > "$OUT/ncu_local_tc.log" 2>&1
timeout 40 ncu -i "$OUT/local_tc_4096.ncu-rep" --section WarpStateStats --section SchedulerStats \
  --section Occupancy --section LaunchStats --section SpeedOfLight --print-details all > "$OUT/ncu_local_tc_4096_stalls.txt" 2>&1
timeout 40 ncu -i "$OUT/local_tc_4096.ncu-rep" --page source --print-source sass --csv \
  > "$OUT/ncu_local_tc_4096_sass.csv" 2>&1; gzip -f "$OUT/ncu_local_tc_4096_sass.csv"; rm -f "$OUT"/*.ncu-rep
grep -E "Warp Cycles Per Issued|Issued Warp|Eligible Warps|Active Warps Per|Achieved Occupancy|Waves Per SM|Block Limit|Duration" "$OUT/ncu_local_tc_4096_stalls.txt"
echo "--- tests"; timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; grep -E "test result|FAILED|panicked" $OUT/tests.txt
