#!/usr/bin/env bash
# v76 (device), written 2026-12-07 (seventh session), in place of v75 (which found no
# machine): three builds in one call. main (1541eae, never run on a device before);
# `epoch-record` (the call's record carries its epoch instead of a memset before every
# call); and that plus `reduced_causal_small` (the m ≤ 64 solve as its own entry, 3.1 k
# SASS instructions instead of one 5.8 k kernel holding both paths). Tests, FUSED=0,
# memcheck and racecheck on the last; timing alternated three times with SDPA in the same
# call; d = 128, bidirectional and the copy-rate share; ncu per kernel at 4096; the local
# kernel's launch and the small solve's stalls and source-level profile at 4096.
# Ordered so that a call cut short still brings the quick tests, the timings and SDPA.
# Staging, here: on `epoch-record` at its first commit, bash cuda/stage_bins.sh .dev/v74 1541eae;
# at the second, bash cuda/stage_bins.sh .dev/v76; cp results/v76_check.sh .dev/v76/v76.sh
# There (carry [".dev/v74", ".dev/v76"]): OUT=$OUT bash .dev/v74/call.sh 560 bash .dev/v76/v76.sh
e=$(TMPDIR=/tmp/e bash cuda/unpack_bins.sh .dev/v74)
bin=$(TMPDIR=/tmp/s bash cuda/unpack_bins.sh .dev/v76)
O=$e/gpu_bench_1541eae; E=$e/gpu_bench; B=$bin/gpu_bench
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
share() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s(%s) ", $2, $5, $8}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- quick tests (epoch + small)"
timeout 60 $bin/gpu_test split small_mixed non_finite constant one_workspace --test-threads=1 > $OUT/tests_quick.txt 2>&1; echo "quick: $(res $OUT/tests_quick.txt)"
echo "--- timing, ms median/best"
N="2048 4096 8192 16384 32768 65536"
for r in 1 2 3; do
  echo "main.$r:   $(timeout 40 $O $N | row)"
  echo "epoch.$r:  $(timeout 40 $E $N | row)"
  echo "small.$r:  $(timeout 40 $B $N | row)"
done
echo "--- SDPA"; timeout 100 python3 cuda/bench_torch.py --sdpa 2048 4096 8192 16384 32768 65536 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -8
echo "--- tests (epoch + small)"
timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
SUB="f16_matches bf16_matches small_mixed non_finite split constant one_workspace"
BLOCKRES_GPU_FUSED=0 timeout 80 $bin/gpu_test $SUB --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
timeout 60 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite one_workspace --test-threads=1 > $OUT/san.txt 2>&1
echo "memcheck: $(grep -E 'ERROR SUMMARY|test result' $OUT/san.txt | paste -sd' ')"
timeout 60 compute-sanitizer --tool racecheck $bin/gpu_test small_mixed_case --test-threads=1 > $OUT/race.txt 2>&1
echo "racecheck: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' $OUT/race.txt | paste -sd' ')"
echo "copy share (small): $(timeout 30 $B 4096 32768 | tee $OUT/copy.txt | share) $(grep -o 'd2d copy [0-9]* GB/s' $OUT/copy.txt)"
echo "main d128:  $(timeout 30 $O --d 128 4096 32768 | row)"
echo "small d128: $(timeout 30 $B --d 128 4096 32768 | row)"
echo "small bidir: $(timeout 60 $B --bidirectional 4096 16384 65536 | row)"
k() { awk -F'","' '/gpu__time_duration/ {printf "%s %s; ", $5, $NF}' "$1" | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g'; }
for x in O E B; do
  timeout 45 ncu --clock-control none --cache-control none --launch-skip 30 --launch-count 3 \
    --metrics gpu__time_duration.sum --csv ${!x} 4096 > $OUT/ncu_${x}_4096.csv 2>> $OUT/ncu.err
  echo "ncu $x 4096:  $(k $OUT/ncu_${x}_4096.csv)"
done
timeout 40 ncu --clock-control none -k regex:local --launch-skip 5 --launch-count 1 --section LaunchStats \
  --section Occupancy $B 4096 > "$OUT/ncu_local_4096_launch.txt" 2>&1
echo "local 4096: $(grep -E 'Registers Per Thread|Waves Per SM|Block Limit (Registers|Shared Mem)|Achieved Occupancy|Dynamic Shared' "$OUT/ncu_local_4096_launch.txt" | sed 's/  */ /g' | paste -sd';')"
timeout 60 ncu --clock-control none -k regex:reduced_causal --launch-skip 5 --launch-count 1 --set full \
  --import-source no -o "$OUT/reduced_4096" $B 4096 > "$OUT/ncu_reduced.log" 2>&1
timeout 30 ncu -i "$OUT/reduced_4096.ncu-rep" --section WarpStateStats --section SchedulerStats \
  --section Occupancy --section LaunchStats --section SpeedOfLight --print-details all > "$OUT/ncu_reduced_4096_stalls.txt" 2>&1
timeout 30 ncu -i "$OUT/reduced_4096.ncu-rep" --page source --print-source sass --csv \
  > "$OUT/ncu_reduced_4096_sass.csv" 2>&1; gzip -f "$OUT/ncu_reduced_4096_sass.csv"; rm -f "$OUT"/*.ncu-rep
grep -E "Warp Cycles Per Issued|Issued Warp|Eligible Warps|Active Warps Per|Duration" "$OUT/ncu_reduced_4096_stalls.txt" | head -8
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
