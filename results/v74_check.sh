#!/usr/bin/env bash
# v74 (device), written 2026-12-07 (sixth session) on branch `epoch-record`, for the next
# session: the call's record is no longer cleared by a memset before every call. Its
# non-finite values carry the call's epoch (cuda/common.cuh, rec_value), the fused
# kernel's flags are set to it, and its tickets count on from the workspace's total.
# Also the v73 confirmation of main that could not run: main's build (13d0c51) against
# SDPA in the same call, and reduced_causal's source view at 4096.
# Staging, here (on the branch): bash cuda/stage_bins.sh .dev/chk 13d0c51; cp results/v74_check.sh .dev/chk/v74.sh
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 500 bash .dev/chk/v74.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_13d0c51
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- tests"
timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
SUB="f16_matches bf16_matches small_mixed non_finite split constant one_workspace"
BLOCKRES_GPU_FUSED=0 timeout 80 $bin/gpu_test $SUB --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
timeout 60 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite one_workspace --test-threads=1 > $OUT/san.txt 2>&1
echo "memcheck: $(grep -E 'ERROR SUMMARY|test result' $OUT/san.txt | paste -sd' ')"
timeout 60 compute-sanitizer --tool racecheck $bin/gpu_test small_mixed_case one_workspace --test-threads=1 > $OUT/race.txt 2>&1
echo "racecheck: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' $OUT/race.txt | paste -sd' ')"
echo "--- timing, ms median/best"
N="2048 4096 8192 16384 32768 65536"
for r in 1 2 3; do
  echo "main.$r:   $(timeout 40 $O $N | row)"
  echo "epoch.$r:  $(timeout 40 $B $N | row)"
done
echo "main d128:  $(timeout 30 $O --d 128 4096 32768 | row)"
echo "epoch d128: $(timeout 30 $B --d 128 4096 32768 | row)"
echo "--- SDPA"; timeout 90 python3 cuda/bench_torch.py --sdpa 2048 4096 8192 16384 32768 65536 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -8
k() { awk -F'","' '/gpu__time_duration/ {printf "%s %s; ", $5, $NF}' "$1" | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g'; }
timeout 45 ncu --clock-control none --cache-control none --launch-skip 30 --launch-count 3 \
  --metrics gpu__time_duration.sum --csv $B 4096 > $OUT/ncu_4096.csv 2>> $OUT/ncu.err
echo "ncu 4096:  $(k $OUT/ncu_4096.csv)"
timeout 60 ncu --clock-control none -k regex:reduced_causal --launch-skip 5 --launch-count 1 --set full \
  --import-source no -o "$OUT/reduced_4096" $B 4096 > "$OUT/ncu_reduced.log" 2>&1
timeout 30 ncu -i "$OUT/reduced_4096.ncu-rep" --section WarpStateStats --section SchedulerStats \
  --section Occupancy --section LaunchStats --section SpeedOfLight --print-details all > "$OUT/ncu_reduced_4096_stalls.txt" 2>&1
timeout 30 ncu -i "$OUT/reduced_4096.ncu-rep" --page source --print-source sass --csv \
  > "$OUT/ncu_reduced_4096_sass.csv" 2>&1; gzip -f "$OUT/ncu_reduced_4096_sass.csv"; rm -f "$OUT"/*.ncu-rep
grep -E "Warp Cycles Per Issued|Issued Warp|Eligible Warps|Active Warps Per|Duration" "$OUT/ncu_reduced_4096_stalls.txt" | head -8
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
