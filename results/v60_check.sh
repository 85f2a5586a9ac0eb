#!/usr/bin/env bash
# v60 (device), written 2026-12-07. Its first half ran as v60s (results/v60_perf.log: the probe
# passed, the 8-row coarse kernel was slower); the rest (from "ncu coarse" on, the profiles at
# 32768, the sweeps, bidirectional, the full 4096 profile) has not run yet.
# Originally:
# block sizes of main's kernels at d = 128 and at the short lengths, the bidirectional
# standing, and the coarse kernel at 8 block rows a CTA (results/v60_coarse8.patch, RPW = 1)
# against main, alternated, with ncu of the coarse kernel at 32768, and the GPU tests of the
# patched build. Staging, here, from main (M = its short hash, P = the patched commit's):
#   git branch -f t60 main; git checkout -q t60; git apply results/v60_coarse8.patch
#   git commit -qam t60; bash cuda/stage_bins.sh .dev/chk main t60; git checkout -q main
#   cp results/v60_check.sh .dev/chk/v60.sh
# (stage_bins builds gpu_test from the checkout, t60.) There (carry [".dev/chk"]):
#   BASE=gpu_bench_M NEW=gpu_bench_P bash .dev/chk/call.sh 330 bash .dev/chk/v60.sh  (about 5 minutes)
# Most telling first (the probe, the A/B, SDPA, the profiles), in case the limit cuts it short.
# It also times SDPA in the same call and profiles every kernel of main at 4096 and 32768.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
echo "--- wgmma probe (cuda/probes/wgmma_probe.cu)"
timeout 120 nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a cuda/probes/wgmma_probe.cu -o /tmp/wgmma_probe 2>&1 | tail -5
timeout 30 /tmp/wgmma_probe 2>&1 | tail -12
echo "--- coarse 8 rows a CTA against main, alternated"
for r in 1 2; do for b in $BASE $NEW; do
  echo "$b.$r: $(timeout 30 $bin/$b 4096 16384 32768 65536 | grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s ", $2, $5}')"
  echo "$b.$r d128: $(timeout 30 $bin/$b --d 128 32768 65536 | grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s ", $2, $5}')"
done; done
echo "--- SDPA"; timeout 120 python3 cuda/bench_torch.py --sdpa 4096 16384 32768 2>&1 | grep -iE "sdpa|^ *[0-9]" | head -12
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
for n in 4096 32768; do
  BLOCKRES_GPU_GROUPS=1 timeout 60 ncu --clock-control none --launch-skip 30 --launch-count 6 \
    --metrics $MI --csv $bin/$BASE $n > $OUT/ncu_${n}_base.csv 2>> $OUT/ncu.err
done
python3 -c "import pathlib, sys; sys.path.insert(0, 'cuda'); import perf_summary; perf_summary.kernels(pathlib.Path(sys.argv[1]))" $OUT
echo "--- ncu coarse at 32768"
for b in $BASE $NEW; do
  echo "$b: $(BLOCKRES_GPU_GROUPS=1 timeout 40 ncu --clock-control none -k regex:coarse --launch-skip 3 --launch-count 3 --metrics gpu__time_duration.sum --csv $bin/$b 32768 2>/dev/null | grep gpu__time | awk -F'","' '{print $NF}' | tr -d '"' | paste -sd' ')"
done
echo "--- tests (t60)"; timeout 100 $bin/gpu_test --test-threads=1 2>&1 | grep -E "test result|FAILED|panicked"
echo "--- d128 blocks"; timeout 60 $bin/$BASE --d 128 --blocks 0,64,96,128 16384 32768 65536 | grep -E "^\|"
echo "--- short blocks"; timeout 40 $bin/$BASE --blocks 0,32,48,96,128 4096 8192 | grep -E "^\|"
echo "--- bidirectional"; timeout 60 $bin/$BASE --bidirectional 4096 16384 65536 | grep -E "^\|"
# Where the fused causal local kernel's cycles go at 4096 (the 2.5x-SDPA bar's length).
timeout 90 ncu --clock-control none -k regex:local_tc --launch-skip 5 --launch-count 1 --set full \
  --import-source no -o "$OUT/local_tc_4096" "$bin/$BASE" 4096 > "$OUT/ncu_local_tc.log" 2>&1
timeout 40 ncu -i "$OUT/local_tc_4096.ncu-rep" --section WarpStateStats --section SchedulerStats \
  --section Occupancy --section LaunchStats --print-details all > "$OUT/ncu_local_tc_4096_stalls.txt" 2>&1
timeout 40 ncu -i "$OUT/local_tc_4096.ncu-rep" --page source --print-source sass --csv \
  > "$OUT/ncu_local_tc_4096_sass.csv" 2>&1; gzip -f "$OUT/ncu_local_tc_4096_sass.csv"; rm -f "$OUT"/*.ncu-rep
grep -E "Warp Cycles Per Issued|Issued Warp|Eligible Warps|Active Warps Per|Achieved Occupancy|Waves Per SM|Block Limit" "$OUT/ncu_local_tc_4096_stalls.txt"
