#!/usr/bin/env bash
# v73 (device), written 2026-12-07 (sixth session): the build to keep after v72a/v72b:
# the reduced solve's shorter latency chains, local_tc's helpers, two head groups from
# 4096 blocks (b ≥ 128); the combine back as in c2f9882. A test subset, memcheck;
# timing alternated twice against c2f9882; SDPA in the same call. (Trimmed to what the
# 297 s of device time left after seven refused starts allow: the whole test suite, the
# separate kernels and memcheck of the reduced change ran in v72a.)
# Staging, here: bash cuda/stage_bins.sh .dev/chk c2f9882; cp results/v73_check.sh .dev/chk/v73.sh
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 170 bash .dev/chk/v73.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/gpu_bench_c2f9882
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
res() { grep -E 'test result|FAILED|panicked' "$1" | head -6 | paste -sd' '; }
echo "--- tests"
timeout 60 $bin/gpu_test split small_mixed non_finite constant --test-threads=1 > $OUT/tests.txt 2>&1; echo "tests: $(res $OUT/tests.txt)"
timeout 40 compute-sanitizer --tool memcheck $bin/gpu_test small_mixed_case non_finite --test-threads=1 > $OUT/san.txt 2>&1
echo "memcheck: $(grep -E 'ERROR SUMMARY|test result' $OUT/san.txt | paste -sd' ')"
echo "--- timing, ms median/best"
N="2048 4096 8192 32768 65536"
for r in 1 2; do
  echo "base.$r:  $(timeout 40 $O $N | row)"
  echo "new.$r:   $(timeout 40 $B $N | row)"
done
echo "--- SDPA"; timeout 70 python3 cuda/bench_torch.py --sdpa 4096 32768 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -4
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
