#!/usr/bin/env bash
# v69 (device), written 2026-12-07 (fifth session): h deferred on the separate causal
# tensor-core path (m > 64 blocks a head): the means pass reads Q and K only, the coarse
# stage skips G̃·v̄, the local kernel sums V's columns itself and leaves z⊗h out of P, and
# the reduced solve and the combine put h back (cuda/common.cuh). The same binary times
# both forms (BLOCKRES_GPU_DEFER_H=0: the old), alternated three times with main's
# kernels of 1b0b075; per-kernel times under ncu at 32768 both ways; SDPA in the call;
# the GPU tests (default, separate kernels, DEFER_H=0), memcheck both ways.
# Staging, here: bash cuda/stage_bins.sh .dev/chk (gpu_bench_1b0b075.gz already there);
# cp results/v69_check.sh .dev/chk/v69.sh.
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 560 bash .dev/chk/v69.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_1b0b075
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- tests"
timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "default: $(res $OUT/tests.txt)"
BLOCKRES_GPU_FUSED=0 timeout 90 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite split constant \
  --test-threads=1 > $OUT/tests_sep.txt 2>&1; echo "FUSED=0: $(res $OUT/tests_sep.txt)"
BLOCKRES_GPU_DEFER_H=0 timeout 90 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite \
  --test-threads=1 > $OUT/tests_nodefer.txt 2>&1; echo "DEFER_H=0: $(res $OUT/tests_nodefer.txt)"
timeout 45 $bin/gpu_decode --test-threads=1 > $OUT/tests_decode.txt 2>&1; echo "decode: $(res $OUT/tests_decode.txt)"
N="4096 8192 16384 32768 65536"
echo "--- alternated (n: median/best ms)"
for r in 1 2 3; do
  echo "main.$r:     $(timeout 40 $O $N | row)"
  echo "defer.$r:    $(timeout 40 $B $N | row)"
  echo "nodefer.$r:  $(BLOCKRES_GPU_DEFER_H=0 timeout 40 $B $N | row)"
done
for r in 1; do
  echo "main.$r d128:    $(timeout 40 $O --d 128 8192 32768 | row)"
  echo "defer.$r d128:   $(timeout 40 $B --d 128 8192 32768 | row)"
  echo "nodefer.$r d128: $(BLOCKRES_GPU_DEFER_H=0 timeout 40 $B --d 128 8192 32768 | row)"
done
echo "--- ncu, 32768, L2 warm between kernels (two calls)"
for f in 1 0; do
  BLOCKRES_GPU_DEFER_H=$f timeout 60 ncu --clock-control none --cache-control none --launch-skip 60 --launch-count 12 \
    --metrics gpu__time_duration.sum --csv $B 32768 > $OUT/ncu_defer$f.csv 2>> $OUT/ncu.err
  echo "defer=$f: $(grep -E '"gpu__time_duration' $OUT/ncu_defer$f.csv | awk -F'","' '{printf "%s %s; ", $5, $NF}' | tr -d '"' | sed 's/(const [A-Za-z]*Params)//g')"
done
echo "--- SDPA"; timeout 120 python3 cuda/bench_torch.py --sdpa 4096 32768 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -6
echo "--- sanitizers"
timeout 100 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_mem.txt 2>&1
echo "memcheck: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_mem.txt | paste -sd' ')"
BLOCKRES_GPU_FUSED=0 timeout 100 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san_mem_sep.txt 2>&1
echo "memcheck FUSED=0: $(grep -E 'ERROR SUMMARY|test result' $OUT/san_mem_sep.txt | paste -sd' ')"
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
