#!/usr/bin/env bash
# v70 (device), written 2026-12-07 (fifth session): v69's build with V's column sums
# (deferred h) moved out of D·V's unrolled loop to the output stage; v69 showed that
# build's local kernel slower than main's in both modes (DEFER_H=0: 0.428 against 0.402
# ms at 32768). Timing alternated three times against main's kernels of 1b0b075, both
# modes of this build; ncu per kernel at 32768; GPU tests (default and separate
# kernels) and memcheck.
# Staging, here: bash cuda/stage_bins.sh .dev/chk; cp results/v70_check.sh .dev/chk/v70.sh.
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 400 bash .dev/chk/v70.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_1b0b075
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
N="4096 16384 32768"
echo "--- alternated (n: median/best ms)"
for r in 1 2 3; do
  echo "main.$r:     $(timeout 40 $O $N | row)"
  echo "defer.$r:    $(timeout 40 $B $N | row)"
  echo "nodefer.$r:  $(BLOCKRES_GPU_DEFER_H=0 timeout 40 $B $N | row)"
done
echo "main d128:    $(timeout 40 $O --d 128 32768 | row)"
echo "defer d128:   $(timeout 40 $B --d 128 32768 | row)"
echo "--- ncu, 32768, L2 warm between kernels (two calls)"
for f in 1 0; do
  BLOCKRES_GPU_DEFER_H=$f timeout 60 ncu --clock-control none --cache-control none --launch-skip 60 --launch-count 6 \
    --metrics gpu__time_duration.sum --csv $B 32768 > $OUT/ncu_defer$f.csv 2>> $OUT/ncu.err
  echo "defer=$f: $(grep -E '"gpu__time_duration' $OUT/ncu_defer$f.csv | awk -F'","' '{printf "%s %s; ", $5, $NF}' | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g')"
done
timeout 60 ncu --clock-control none --cache-control none --launch-skip 60 --launch-count 6 \
  --metrics gpu__time_duration.sum --csv $O 32768 > $OUT/ncu_main.csv 2>> $OUT/ncu.err
echo "main: $(grep -E '"gpu__time_duration' $OUT/ncu_main.csv | awk -F'","' '{printf "%s %s; ", $5, $NF}' | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g')"
echo "--- tests"
timeout 100 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
BLOCKRES_GPU_FUSED=0 timeout 80 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite split constant \
  --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
BLOCKRES_GPU_FUSED=0 timeout 60 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_mem_sep.txt 2>&1
echo "memcheck FUSED=0: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_mem_sep.txt | paste -sd' ')"
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
