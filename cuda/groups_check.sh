#!/usr/bin/env bash
# On the device: the head-group split (plan::head_groups) in one call, about 4 minutes:
# the GPU and decoder tests as the plan decides, the GPU tests with every eligible call
# split in three (BLOCKRES_GPU_GROUPS=3, fused prologue off so small m qualifies),
# sanitizers on a split call, and timings of the same binary split and not
# (BLOCKRES_GPU_GROUPS=1), alternated three times. Here first: bash cuda/stage_bins.sh
# .dev/chk. There: OUT=$OUT bash cuda/groups_check.sh .dev/chk (TESTS=filters, TOOLS="memcheck",
# SANTESTS, SPLIT_TESTS=filters, NS="n ...", EXTRA=0: a shorter check)
bin=$(bash cuda/unpack_bins.sh "${1:-.dev/chk}")
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
timeout 150 $bin/gpu_test ${TESTS:-} --test-threads=1 > $OUT/tests.txt 2>&1
echo "tests rc=$?" >> $OUT/machine.txt
timeout 60 $bin/gpu_decode --test-threads=1 > $OUT/tests_decode.txt 2>&1
echo "decode tests rc=$?" >> $OUT/machine.txt
BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 150 $bin/gpu_test ${SPLIT_TESTS:-f16_matches bf16_matches small_mixed non_finite host_stream constant_values} --test-threads=1 > $OUT/tests_split3.txt 2>&1
echo "split-3 tests rc=$?" >> $OUT/machine.txt
for tool in ${TOOLS:-memcheck racecheck}; do
  echo "--- $tool (split in 3)" >> $OUT/san.txt
  BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 60 compute-sanitizer --tool $tool --print-limit 3 \
    $bin/gpu_test ${SANTESTS:-small_mixed_case host_stream_entry} --test-threads=1 >> $OUT/san.txt 2>&1
done
for r in 1 2 3; do
  BLOCKRES_GPU_GROUPS=1 timeout 60 $bin/gpu_bench ${NS:-4096 16384 32768 65536} > $OUT/one$r.txt 2>&1
  timeout 60 $bin/gpu_bench ${NS:-4096 16384 32768 65536} > $OUT/split$r.txt 2>&1
done
if [ "${EXTRA:-1}" = 1 ]; then
# d = 128 (b = 96 by the automatic rule, outside the split's rule): would it pay there too?
for r in 1; do
  BLOCKRES_GPU_GROUPS=1 timeout 60 $bin/gpu_bench --d 128 32768 65536 > $OUT/d128_one$r.txt 2>&1
  BLOCKRES_GPU_GROUPS=4 timeout 60 $bin/gpu_bench --d 128 32768 65536 > $OUT/d128_split$r.txt 2>&1
done
# n = 16384 at b = 128 (automatic: 64), split and not.
BLOCKRES_GPU_GROUPS=1 timeout 30 $bin/gpu_bench --blocks 128 16384 > $OUT/b128_one.txt 2>&1
BLOCKRES_GPU_GROUPS=4 timeout 30 $bin/gpu_bench --blocks 128 16384 > $OUT/b128_split.txt 2>&1
fi
echo "== summary"; cat $OUT/machine.txt
for f in tests tests_decode tests_split3; do echo "$f: $(grep -h "test result" $OUT/$f.txt | paste -sd' ')"; done
grep -h "split call" $OUT/tests.txt $OUT/tests_split3.txt
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san.txt | paste -sd' ' | sed 's/=========//g'
for f in one1 split1 one2 split2 one3 split3 d128_one1 d128_split1 b128_one b128_split; do echo "$f: $(grep -E "^\| +[0-9]" $OUT/$f.txt | awk -F"|" "{printf \"%s:%s \", \$2, \$5}")"; done
