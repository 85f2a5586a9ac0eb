#!/usr/bin/env bash
# v72a (device), written 2026-12-07 (sixth session): the combine loading P and w before
# its wait (two 16-byte accesses a thread, half the CTAs), the reduced solve signalling
# after its wait, the local kernel's column sums and non-finite rescans as one helper
# each (local_tc.cu), and the reduced solve's latency chains cut (panel inverses
# right-looking with vector loads of G̃'s columns; u_P and s_P in four partial sums). Tests (default, combine under PDL, separate kernels), memcheck;
# timing alternated three times against c2f9882 (main at the session's start): the new
# build plain, with BLOCKRES_GPU_PDL=tail (only the combine launched with PDL) and =1 (every
# kernel); ncu per kernel at 4096 (L2 warm), base and tail.
# Staging, here: bash cuda/stage_bins.sh .dev/chk c2f9882; cp results/v72a_check.sh .dev/chk/v72a.sh
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 420 bash .dev/chk/v72a.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_c2f9882
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- tests"
timeout 100 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
SUB="f16_matches bf16_matches small_mixed non_finite split constant"
BLOCKRES_GPU_PDL=tail timeout 60 $bin/gpu_test $SUB --test-threads=1 > $OUT/tests_tail.txt 2>&1; echo "PDL=tail: $(res $OUT/tests_tail.txt)"
BLOCKRES_GPU_FUSED=0 timeout 60 $bin/gpu_test $SUB --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
BLOCKRES_GPU_PDL=tail timeout 40 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_tail.txt 2>&1
echo "memcheck tail: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_tail.txt | paste -sd' ')"
BLOCKRES_GPU_PDL=tail BLOCKRES_GPU_FUSED=0 timeout 40 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_tail_sep.txt 2>&1
echo "memcheck tail FUSED=0: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_tail_sep.txt | paste -sd' ')"
echo "--- timing, ms median/best"
N="2048 4096 8192 32768"
for r in 1 2 3; do
  echo "base.$r:  $(timeout 40 $O $N | row)"
  echo "new.$r:   $(BLOCKRES_GPU_PDL=0 timeout 40 $B $N | row)"
  echo "tail.$r:  $(BLOCKRES_GPU_PDL=tail timeout 40 $B $N | row)"
  echo "pdl.$r:   $(BLOCKRES_GPU_PDL=1 timeout 40 $B $N | row)"
done
k() { awk -F'","' '/gpu__time_duration/ {printf "%s %s; ", $5, $NF}' "$1" | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g'; }
timeout 45 ncu --clock-control none --cache-control none --launch-skip 30 --launch-count 3 \
  --metrics gpu__time_duration.sum --csv $O 4096 > $OUT/ncu_base_4096.csv 2>> $OUT/ncu.err
BLOCKRES_GPU_PDL=tail timeout 45 ncu --clock-control none --cache-control none --launch-skip 30 --launch-count 3 \
  --metrics gpu__time_duration.sum --csv $B 4096 > $OUT/ncu_tail_4096.csv 2>> $OUT/ncu.err
echo "ncu base 4096: $(k $OUT/ncu_base_4096.csv)"
echo "ncu new 4096:  $(k $OUT/ncu_tail_4096.csv)"
timeout 45 ncu --clock-control none --cache-control none --launch-skip 60 --launch-count 6 \
  --metrics gpu__time_duration.sum --csv $B 32768 > $OUT/ncu_new_32768.csv 2>> $OUT/ncu.err
echo "ncu new 32768: $(k $OUT/ncu_new_32768.csv)"
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
