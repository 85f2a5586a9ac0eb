#!/usr/bin/env bash
# v71 (device), written 2026-12-07 (fifth session): deferred h with the reduced
# system's right side v̄ + γ·p̄′ formed by the local kernel into p̄ (the reduced kernels
# back as they were: in v70 reduced_causal took 30.5 µs against main's 27.1 at 32768,
# reading v̄ beside p̄). The GPU tests (default, separate kernels), memcheck; timing
# alternated twice against main 1b0b075; ncu per kernel at 32768.
# Staging, here: bash cuda/stage_bins.sh .dev/chk; cp results/v71_check.sh .dev/chk/v71.sh.
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 250 bash .dev/chk/v71.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_1b0b075
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- tests"
timeout 90 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
BLOCKRES_GPU_FUSED=0 timeout 60 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite split constant \
  --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
N="16384 32768"
for r in 1 2; do
  echo "main.$r:   $(timeout 30 $O $N | row)"
  echo "defer.$r:  $(timeout 30 $B $N | row)"
done
timeout 45 ncu --clock-control none --cache-control none --launch-skip 60 --launch-count 6 \
  --metrics gpu__time_duration.sum --csv $B 32768 > $OUT/ncu_defer.csv 2>> $OUT/ncu.err
echo "ncu: $(grep -E '"gpu__time_duration' $OUT/ncu_defer.csv | awk -F'","' '{printf "%s %s; ", $5, $NF}' | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g')"
BLOCKRES_GPU_FUSED=0 timeout 40 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_mem_sep.txt 2>&1
echo "memcheck FUSED=0: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_mem_sep.txt | paste -sd' ')"
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
