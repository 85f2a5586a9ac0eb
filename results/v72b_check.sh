#!/usr/bin/env bash
# v72b (device), written 2026-12-07 (fifth session; run in the sixth as v72b) for the next call: the standing of the
# kept kernels (h deferred, fe7619c and later) against SDPA in one call, at every length
# and both head widths, and the causal block-size sweep again now that the separate
# path's means and coarse stages are cheaper (the automatic b was tuned before, v61).
# Staging, here: bash cuda/stage_bins.sh .dev/chk; cp results/v72b_check.sh .dev/chk/v72b.sh.
# There (carry [".dev/chk"]): [PDL=tail] OUT=$OUT bash .dev/chk/call.sh 450 bash .dev/chk/v72b.sh
export BLOCKRES_GPU_PDL=${PDL:-}  # PDL=tail in the call: the combine under PDL (v72a)
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
N="2048 4096 8192 16384 32768 65536"
for r in 1 2; do
  echo "causal.$r:      $(timeout 60 $B $N | row)"
  echo "causal.$r d128: $(timeout 60 $B --d 128 $N | row)"
done
echo "bidir:          $(timeout 60 $B --bidirectional 4096 16384 65536 | row)"
echo "--- block sweep (causal, d = 64; then d = 128)"
timeout 90 $B --blocks 64,96,128 8192 16384 32768 > $OUT/sweep64.txt 2>&1; grep -E '^\| +[0-9]' $OUT/sweep64.txt
timeout 90 $B --d 128 --blocks 64,96,128 8192 16384 32768 > $OUT/sweep128.txt 2>&1; grep -E '^\| +[0-9]' $OUT/sweep128.txt
echo "--- b = 64 / 128 at 2048, 4096 (d = 64), three rounds"
for r in 1 2 3; do echo "blocks.$r: $(timeout 40 $B --blocks 64,128 2048 4096 | grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s b%s:%s ", $2, $3, $5}')"; done
echo "--- head groups 1 / 2 / 4 at 32768 (d = 64), two rounds"
for r in 1 2; do for g in 1 2 4; do echo "groups$g.$r: $(BLOCKRES_GPU_GROUPS=$g timeout 30 $B 32768 65536 | row)"; done; done
echo "--- SDPA"; timeout 150 python3 cuda/bench_torch.py --sdpa 2048 4096 8192 16384 32768 65536 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -8
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
