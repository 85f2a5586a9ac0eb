#!/usr/bin/env bash
# v56b (device): after the coarse kernel's read guard and the split threshold 8192:
# tests, racecheck/memcheck on the coarse kernel (unfused, split in 3), and timings of
# main's gpu_bench (BASE) against this build, alternated twice.
# Here: bash cuda/stage_bins.sh .dev/chk b386771; there: OUT=$OUT bash results/v56b_check.sh (carry .dev/chk).
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=${BASE:-gpu_bench_b386771}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "tests rc=$?" >> $OUT/machine.txt
for tool in racecheck memcheck; do
  echo "--- $tool" >> $OUT/san.txt
  BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 60 compute-sanitizer --tool $tool --print-limit 3 \
    $bin/gpu_test small_mixed_case host_stream_entry --test-threads=1 >> $OUT/san.txt 2>&1
done
NS="4096 16384 32768 65536"
for r in 1 2; do
  timeout 40 $bin/$B $NS > $OUT/base$r.txt 2>&1
  timeout 40 $bin/gpu_bench $NS > $OUT/new$r.txt 2>&1
done
echo "== summary"; cat $OUT/machine.txt
echo "tests: $(grep -h "test result" $OUT/tests.txt)"; grep -h "FAILED\|panicked\|split call" $OUT/tests.txt | head -5
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san.txt | paste -sd' ' | sed 's/=========//g'
for f in base1 new1 base2 new2; do echo "$f: $(grep -E "^\| +[0-9]" $OUT/$f.txt | awk -F"|" "{printf \"%s:%s \", \$2, \$5}")"; done
