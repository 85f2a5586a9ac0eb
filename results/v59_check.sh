#!/usr/bin/env bash
# v59 (device), written 2026-12-06/07, run 2026-12-07 03:44 UTC on an H100 (results/v59_*,
# BENCHMARKS.md; its "new64" profile caught the automatic b: `--block 64` adds b = 64 after
# it): results/v57_coarse16.patch and results/v58_reduced512.patch, each alone
# and together, against main in the same call. Here, from main (M = its short hash):
#   for p in v57_coarse16:t57 v58_reduced512:t58; do git branch -f ${p#*:} main;
#     git checkout -q ${p#*:}; git apply results/${p%:*}.patch; git commit -qam ${p#*:}; done
#   git branch -f t5758 t57; git checkout -q t5758; git apply results/v58_reduced512.patch
#   git commit -qam both; bash cuda/stage_bins.sh .dev/chk main t57 t58
#   cp results/v59_check.sh .dev/chk/v59.sh
# There (carry [".dev/chk"]), with the short hashes of main, t57 and t58:
#   BASE=gpu_bench_M A57=gpu_bench_T57 A58=gpu_bench_T58 bash .dev/chk/call.sh 400 bash .dev/chk/v59.sh
# Tests and sanitizers of the combined build (gpu_test); timings alternated twice; the
# block sizes 64 / 96 / 128; SDPA in the same call; ncu per kernel at 32768.
bin=$(bash cuda/unpack_bins.sh .dev/chk)
BENCHES="$BASE $A57 $A58 gpu_bench"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "tests rc=$?" >> $OUT/machine.txt
timeout 50 $bin/gpu_decode --test-threads=1 > $OUT/tests_decode.txt 2>&1; echo "decode tests rc=$?" >> $OUT/machine.txt
BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 80 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite host_stream constant_values --test-threads=1 > $OUT/tests_split3.txt 2>&1
echo "split-3 tests rc=$?" >> $OUT/machine.txt
NS="4096 16384 32768 65536"
for r in 1 2; do
  for b in $BENCHES; do
    timeout 40 $bin/$b $NS > $OUT/$b.$r.txt 2>&1
  done
done
for tool in memcheck racecheck; do
  echo "--- $tool" >> $OUT/san.txt
  BLOCKRES_GPU_FUSED=0 timeout 60 compute-sanitizer --tool $tool --print-limit 3 \
    $bin/gpu_test small_mixed_case host_stream_entry --test-threads=1 >> $OUT/san.txt 2>&1
done
timeout 40 $bin/gpu_bench --blocks 64,96,128 16384 32768 65536 > $OUT/blocks.txt 2>&1
timeout 100 python3 cuda/bench_torch.py --sdpa 4096 32768 > $OUT/sdpa.txt 2>&1
# Per kernel of one call at 32768 into $OUT/ncu_32768_LABEL.csv, the metrics and table
# of cuda/perf_run.sh (perf_summary.py's kernels()).
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
for spec in "base $BASE" "new gpu_bench" "new64 gpu_bench --block 64"; do
  set -- $spec; label=$1; b=$2; shift 2
  BLOCKRES_GPU_GROUPS=1 timeout 60 ncu --clock-control none --launch-skip 30 --launch-count 6 \
    --metrics $MI --csv "$bin/$b" "$@" 32768 > $OUT/ncu_32768_$label.csv 2>> $OUT/ncu.err
done
echo "== summary"; cat $OUT/machine.txt
for f in tests tests_decode tests_split3; do echo "$f: $(grep -h "test result" $OUT/$f.txt | paste -sd' ')"; grep -h "FAILED\|panicked" $OUT/$f.txt | head -3; done
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san.txt | paste -sd' ' | sed 's/=========//g'
for r in 1 2; do for b in $BENCHES; do echo "$b.$r: $(grep -E "^\| +[0-9]" $OUT/$b.$r.txt | awk -F"|" "{printf \"%s:%s \", \$2, \$5}")"; done; done
grep -E "^\|" $OUT/blocks.txt | head -14
grep -iE "sdpa|^ *[0-9]" $OUT/sdpa.txt | head -8
python3 -c "import pathlib, sys; sys.path.insert(0, 'cuda'); import perf_summary; perf_summary.kernels(pathlib.Path(sys.argv[1]))" $OUT
