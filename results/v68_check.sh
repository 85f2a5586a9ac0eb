#!/usr/bin/env bash
# v68 (device), written 2026-12-07 (fourth session): v67's build was slower than main
# without PDL; which of its two changes costs: the readiness counters alone (93d1857,
# __threadfence + red.release at the end of every local CTA) or the prologue's flag
# published with fence.acq_rel + relaxed add alone (760887d, on 1b0b075). Timing only,
# alternated three times against main 1b0b075.
# Staging, here: bash cuda/stage_bins.sh .dev/chk 1b0b075 93d1857 760887d; cp results/v68_check.sh .dev/chk/v68.sh.
# There (carry [".dev/chk"]): OUT=$OUT bash .dev/chk/call.sh 130 bash .dev/chk/v68.sh
bin=$(bash cuda/unpack_bins.sh .dev/chk)
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s:%s/%s ", $2, $5, $6}'; }
N="4096 32768"
for r in 1 2 3; do
  echo "main.$r:        $(timeout 40 $bin/gpu_bench_1b0b075 $N | row)"
  echo "ready.$r:       $(timeout 40 $bin/gpu_bench_93d1857 $N | row)"
  echo "ready.pdl.$r:   $(BLOCKRES_GPU_PDL=1 timeout 40 $bin/gpu_bench_93d1857 $N | row)"
  echo "fence.$r:       $(timeout 40 $bin/gpu_bench_760887d $N | row)"
done
for r in 1; do
  echo "main.$r d128:      $(timeout 40 $bin/gpu_bench_1b0b075 --d 128 4096 32768 | row)"
  echo "ready.pdl.$r d128: $(BLOCKRES_GPU_PDL=1 timeout 40 $bin/gpu_bench_93d1857 --d 128 4096 32768 | row)"
  echo "fence.$r d128:     $(timeout 40 $bin/gpu_bench_760887d --d 128 4096 32768 | row)"
done
# Per-kernel times of main at 4096 and 32768 with L2 left warm between kernels
# (--cache-control none), as in the pipeline; v61's profile flushed the caches.
for n in 4096; do
  timeout 40 ncu --clock-control none --cache-control none --launch-skip 30 --launch-count 6 \
    --metrics gpu__time_duration.sum --csv $bin/gpu_bench_1b0b075 $n > $OUT/ncu_warm_$n.csv 2>> $OUT/ncu.err
  echo "ncu warm $n: $(grep -E '"gpu__time_duration' $OUT/ncu_warm_$n.csv | awk -F'","' '{printf "%s %s ns; ", $5, $NF}' | tr -d '"')"
done
