#!/usr/bin/env bash
# v57 (device), written and NOT run (the session's device time ran out): the coarse kernel
# at 16 block rows a CTA, 2 a warp (results/v57_coarse16.patch, applied to main with
# git apply) against a6b214b's (32, 4 a warp): GPU tests (f32 takes the coarse kernel in
# every case), racecheck on the coarse kernel, timings alternated twice.
# Here: bash cuda/stage_bins.sh .dev/chk a6b214b; there: OUT=$OUT bash results/v57_check.sh.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=${BASE:-gpu_bench_a6b214b}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
timeout 80 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "tests rc=$?" >> $OUT/machine.txt
for tool in racecheck; do
  echo "--- $tool" >> $OUT/san.txt
  BLOCKRES_GPU_FUSED=0 timeout 50 compute-sanitizer --tool $tool --print-limit 3 \
    $bin/gpu_test small_mixed_case --test-threads=1 >> $OUT/san.txt 2>&1
done
NS="16384 32768 65536"
for r in 1 2; do
  timeout 30 $bin/$B $NS > $OUT/base$r.txt 2>&1
  timeout 30 $bin/gpu_bench $NS > $OUT/new$r.txt 2>&1
done
echo "== summary"; cat $OUT/machine.txt
for f in tests; do echo "$f: $(grep -h "test result" $OUT/$f.txt)"; grep -h "FAILED\|panicked" $OUT/$f.txt | head -3; done
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san.txt | paste -sd' ' | sed 's/=========//g'
for f in base1 new1 base2 new2; do echo "$f: $(grep -E "^\| +[0-9]" $OUT/$f.txt | awk -F"|" "{printf \"%s:%s \", \$2, \$5}")"; done
