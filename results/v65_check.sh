#!/usr/bin/env bash
# v65 (device), written 2026-12-07 (third session): the workspace's buffers passed as raw
# addresses (no cudarc per-use events: eleven cuStreamWaitEvent before the first kernel
# of a call, and one cuEventRecord a buffer after each launch) against main, alternated,
# SDPA in the same call; the GPU tests (head groups included) and memcheck.
# Staging, here: bash cuda/stage_bins.sh .dev/chk M (M = main); cp results/v65_check.sh .dev/chk/v65.sh.
# There (carry [".dev/chk"]): BASE=gpu_bench_M OUT=$OUT bash .dev/chk/v65.sh.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/$BASE
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
echo "--- base / new, alternated (n: median/best ms)"
for r in 1 2 3; do
  echo "base.$r: $(timeout 40 $O 1024 2048 4096 16384 32768 | row)"
  echo "new.$r:  $(timeout 40 $B 1024 2048 4096 16384 32768 | row)"
done
for r in 1 2; do
  echo "base.$r d128: $(timeout 40 $O --d 128 4096 32768 | row)"
  echo "new.$r d128:  $(timeout 40 $B --d 128 4096 32768 | row)"
  echo "base.$r bidir: $(timeout 40 $O --bidirectional 4096 16384 | row)"
  echo "new.$r bidir:  $(timeout 40 $B --bidirectional 4096 16384 | row)"
done
echo "--- SDPA"; timeout 100 python3 cuda/bench_torch.py --sdpa 1024 2048 4096 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -6
echo "--- tests"; timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests.txt | head -8
echo "--- memcheck"; timeout 100 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite split --test-threads=1 2>&1 | tee $OUT/san.txt | grep -E 'ERROR SUMMARY|test result' | paste -sd' '
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
