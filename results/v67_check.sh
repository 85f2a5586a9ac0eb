#!/usr/bin/env bash
# v67 (device), written 2026-12-07 (fourth session): the reduced solve and the combine
# wait for their own head (readiness counters, cuda/common.cuh) instead of the whole
# kernel before. That overlap needs programmatic dependent launch (BLOCKRES_GPU_PDL=1,
# off by default since v26), so the forms timed, alternated three times: main 1b0b075
# without and with PDL, this build without PDL, with PDL, and with PDL but
# BLOCKRES_GPU_READY=0; SDPA in the same call; the GPU tests both ways, memcheck with PDL.
# Staging, here: bash cuda/stage_bins.sh .dev/chk 1b0b075; cp results/v67_check.sh .dev/chk/v67.sh.
# There (carry [".dev/chk"]): BASE=gpu_bench_1b0b075 OUT=$OUT bash .dev/chk/call.sh 480 bash .dev/chk/v67.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/$BASE
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
echo "--- tests (PDL=1, then without; the split test again with PDL=1)"
BLOCKRES_GPU_PDL=1 timeout 100 $bin/gpu_test --test-threads=1 > $OUT/tests_pdl.txt 2>&1
echo "pdl: $(grep -E 'test result|FAILED|panicked' $OUT/tests_pdl.txt | head -6 | paste -sd' ')"
timeout 100 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1
echo "plain: $(grep -E 'test result|FAILED|panicked' $OUT/tests.txt | head -6 | paste -sd' ')"
echo "split.pdl: $(BLOCKRES_GPU_PDL=1 timeout 40 $bin/gpu_test split 2>&1 | grep -E 'test result' | paste -sd' ')"
N="2048 4096 8192 16384 32768"
echo "--- alternated (n: median/best ms)"
for r in 1 2 3; do
  echo "base.$r:        $(timeout 40 $O $N | row)"
  echo "base.pdl.$r:    $(BLOCKRES_GPU_PDL=1 timeout 40 $O $N | row)"
  echo "new.$r:         $(timeout 40 $B $N | row)"
  echo "new.pdl.$r:     $(BLOCKRES_GPU_PDL=1 timeout 40 $B $N | row)"
  echo "new.pdl.r0.$r:  $(BLOCKRES_GPU_PDL=1 BLOCKRES_GPU_READY=0 timeout 40 $B $N | row)"
done
for r in 1 2; do
  echo "base.$r d128:     $(timeout 40 $O --d 128 4096 32768 | row)"
  echo "new.pdl.$r d128:  $(BLOCKRES_GPU_PDL=1 timeout 40 $B --d 128 4096 32768 | row)"
  echo "new.$r bidir:      $(timeout 40 $B --bidirectional 4096 16384 | row)"
  echo "new.pdl.$r bidir:  $(BLOCKRES_GPU_PDL=1 timeout 40 $B --bidirectional 4096 16384 | row)"
done
echo "--- SDPA"; timeout 120 python3 cuda/bench_torch.py --sdpa 2048 4096 32768 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -6
echo "--- memcheck (PDL=1)"; BLOCKRES_GPU_PDL=1 timeout 90 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case split --test-threads=1 2>&1 | tee $OUT/san.txt | grep -E 'ERROR SUMMARY|test result' | paste -sd' '
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
