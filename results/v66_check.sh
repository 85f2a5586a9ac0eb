#!/usr/bin/env bash
# v66 (device), written 2026-12-07 (third session): v65's raw workspace addresses with a
# head group's buffers allocated on its own stream (v65's split test failed): the GPU
# tests, the split test twice more, and a short timing against main.
# Staging as v65 (results/v65_check.sh); cp results/v66_check.sh .dev/chk/v66.sh.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
echo "--- tests"; timeout 100 $bin/gpu_test --test-threads=1 2>&1 | grep -E "test result|FAILED|panicked|split call" | head -8
for r in 1 2; do echo "split.$r: $(timeout 40 $bin/gpu_test split --nocapture 2>&1 | grep -E 'split call|test result' | paste -sd' ')"; done
for r in 1 2; do
  echo "base.$r: $(timeout 20 $bin/$BASE 4096 32768 | row)"
  echo "new.$r:  $(timeout 20 $bin/gpu_bench 4096 32768 | row)"
done
