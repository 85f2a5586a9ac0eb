#!/usr/bin/env bash
# v64 (device), written 2026-12-07 (third session): the fused tail, kept where the call's
# CTAs fit in one wave (auto), against main (BASE), the tail everywhere fused
# (BLOCKRES_GPU_TAIL=1) and never (=0), three rounds alternated, SDPA in the same call;
# the GPU tests (auto, and TAIL=0) and memcheck/racecheck on the tail's path.
# Staging, here: bash cuda/stage_bins.sh .dev/chk 2cbbbda; cp results/v64_check.sh .dev/chk/v64.sh.
# There (carry [".dev/chk"]): BASE=gpu_bench_2cbbbda OUT=$OUT bash .dev/chk/v64.sh.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=$bin/gpu_bench; O=$bin/$BASE
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
row() { grep -E '^\| +[0-9]' | awk -F'|' '{printf "%s/%s:%s ", $2, $3, $5}'; }
echo "--- tests (auto)"; timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests_auto.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests_auto.txt | head -8
echo "--- base / auto / always / never, alternated"
for r in 1 2 3; do
  echo "base.$r:   $(timeout 40 $O 1024 2048 3072 4096 | row)"
  echo "auto.$r:   $(timeout 40 $B 1024 2048 3072 4096 | row)"
  echo "always.$r: $(BLOCKRES_GPU_TAIL=1 timeout 40 $B 1024 2048 3072 4096 | row)"
  echo "never.$r:  $(BLOCKRES_GPU_TAIL=0 timeout 40 $B 1024 2048 3072 4096 | row)"
done
for r in 1 2; do
  echo "base.$r d128:   $(timeout 40 $O --d 128 1024 2048 4096 | row)"
  echo "auto.$r d128:   $(timeout 40 $B --d 128 1024 2048 4096 | row)"
  echo "always.$r d128: $(BLOCKRES_GPU_TAIL=1 timeout 40 $B --d 128 1024 2048 4096 | row)"
  echo "base.$r b128:   $(timeout 40 $O --blocks 128 4096 8192 | row)"
  echo "always.$r b128: $(BLOCKRES_GPU_TAIL=1 timeout 40 $B --blocks 128 4096 8192 | row)"
done
echo "--- SDPA"; timeout 100 python3 cuda/bench_torch.py --sdpa 1024 2048 4096 > $OUT/sdpa.txt 2>&1
grep -E "^\| +[0-9]|SDPA" $OUT/sdpa.txt | head -6
echo "--- ncu (auto; 2048: tail, 4096: separate)"
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
for n in 2048 4096; do
  timeout 60 ncu --clock-control none --launch-skip 12 --launch-count 3 --metrics $MI --csv $B $n > $OUT/ncu_auto_$n.csv 2>> $OUT/ncu.err
  echo "$n: $(grep -E 'gpu__time_duration' $OUT/ncu_auto_$n.csv | awk -F'","' '{print $5":"$NF}' | tr -d '"' | paste -sd' ')"
done
echo "--- sanitizers (auto)"
for tool in memcheck racecheck; do
  echo "$tool: $(timeout 150 compute-sanitizer --tool $tool $bin/gpu_test small_mixed_case non_finite --test-threads=1 2>&1 | tee -a $OUT/san.txt | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|test result' | paste -sd' ')"
done
echo "--- tests (never)"; BLOCKRES_GPU_TAIL=0 timeout 150 $bin/gpu_test --test-threads=1 > $OUT/tests_never.txt 2>&1
grep -E "test result|FAILED|panicked" $OUT/tests_never.txt | head -8
tar czf /tmp/all.tgz -C $OUT . && find $OUT -mindepth 1 ! -name perf.log -delete && mv /tmp/all.tgz $OUT/
