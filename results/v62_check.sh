#!/usr/bin/env bash
# v62 (device), written 2026-12-07 (third session): the fused tail (the causal tensor-core
# local kernel also solves the reduced system for its block and writes Y once, up to 64
# blocks a head: one launch a call) against main's three launches, alternated, with SDPA
# in the same call; the GPU tests both ways; the sanitizers on the tail's path.
# Staging, here: bash cuda/stage_bins.sh .dev/chk M (M = main without the tail, 2cbbbda);
# cp results/v62_check.sh .dev/chk/v62.sh. There (carry [".dev/chk"]):
#   BASE=gpu_bench_M OUT=$OUT bash .dev/chk/v62.sh, under `timeout`.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/$BASE
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s/%s:%s ", $2, $3, $5}'; }
echo "--- tests (tail)"; timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests_tail.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests_tail.txt | head -8
echo "--- base / tail / tail off (BLOCKRES_GPU_TAIL=0), alternated"
for r in 1 2; do
  echo "base.$r: $(timeout 40 $O 1024 2048 4096 | row)"
  echo "tail.$r: $(timeout 40 $B 1024 2048 4096 | row)"
  echo "off.$r:  $(BLOCKRES_GPU_TAIL=0 timeout 40 $B 1024 2048 4096 | row)"
  echo "base.$r b128: $(timeout 40 $O --blocks 128 4096 8192 | row)"
  echo "tail.$r b128: $(timeout 40 $B --blocks 128 4096 8192 | row)"
  echo "base.$r d128: $(timeout 40 $O --d 128 2048 4096 | row)"
  echo "tail.$r d128: $(timeout 40 $B --d 128 2048 4096 | row)"
done
echo "--- SDPA"; timeout 100 python3 cuda/bench_torch.py --sdpa 2048 4096 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -6
echo "--- ncu at 4096 (tail)"
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
timeout 60 ncu --clock-control none --launch-skip 10 --launch-count 3 --metrics $MI --csv $B 4096 > $OUT/ncu_tail_4096.csv 2>> $OUT/ncu.err
grep -E 'gpu__time_duration|inst_executed' $OUT/ncu_tail_4096.csv | awk -F'","' '{print $5, $(NF-2), $NF}' | tr -d '"'
echo "--- sanitizers (tail)"
for tool in memcheck racecheck synccheck; do
  echo "$tool: $(timeout 150 compute-sanitizer --tool $tool $bin/gpu_test small_mixed_case non_finite --test-threads=1 2>&1 | tee -a $OUT/san.txt | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' | paste -sd' ')"
done
echo "--- tests (tail off)"; BLOCKRES_GPU_TAIL=0 timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests_off.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests_off.txt | head -8
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
