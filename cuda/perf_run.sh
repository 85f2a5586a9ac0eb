#!/usr/bin/env bash
# Issue 14's whole check in one device call (build here first: bash cuda/stage_bins.sh
# .dev/chk [COMMIT]), then there, from the repo root, carrying .dev/chk:
#   OUT=$OUT BASE=gpu_bench_<commit> bash cuda/perf_run.sh .dev/chk
# In order of importance, so a call cut short keeps the rest: the GPU tests (both local
# kernels for 16-bit types) and the decoder's; the timings, causal and bidirectional, of
# this build twice and of BASE before and after them (same-run ratios); d = 128, this
# build's and BASE's, with the block sizes beside them; one PyTorch SDPA hop; Nsight
# Compute per kernel for one causal call at 4096 and 32768 and one bidirectional call at
# 16384 (this build and BASE), the causal local kernel's stall reasons and its hottest
# SASS lines at 32768; compute-sanitizer on the small cases. A summary is printed last.
# PART=1 runs the tests and timings (about 5 minutes), PART=2 the profiles (1), PART=3
# the sanitizers, PART=4 per-kernel times of one causal d = 128 call (this build and
# BASE), PART=5 the causal block sizes 64, 96, 128 at d = 64 and 128, PART=6 the fused
# causal path (n ≤ 64·b) against the separate means and coarse kernels, PART=7 the local
# kernel's instruction cuts against BASE (with per-kernel instruction counts), PART=8 this
# build, fused and separate, against BASE and ALT (lengths N8), PART=9 only the tests of
# both paths; unset, 123.
# PDL=1 adds a timing with programmatic dependent launch. DEADLINE=s skips the optional
# steps once s seconds have passed, so a short device budget still ends with the summary
# and the archive; LITE=1 runs only the default kernels' tests. Everything written to
# $OUT is also packed into $OUT/all.tgz at the end (the device tool brings back at most 8
# files).
set -o pipefail
bin=$(bash "$(dirname "$0")/unpack_bins.sh" "${1:?usage: bash cuda/perf_run.sh BINDIR}")
OUT=${OUT:-/tmp/blockres_perf}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; ncu --version | tail -1; } > "$OUT/machine.txt" 2>&1
PART=${PART:-123}
more() { [ -z "${DEADLINE:-}" ] || (( SECONDS < DEADLINE )); }
# The GPU tests, the 16-bit ones also with the separate means and coarse kernels, and the
# decoder's (PART=6 to 9).
tests_both_paths() {
  timeout 120 "$bin/gpu_test" --test-threads=1 --nocapture > "$OUT/gpu_tests.txt" 2>&1
  BLOCKRES_GPU_FUSED=0 timeout 90 "$bin/gpu_test" f16_matches bf16_matches small_mixed non_finite \
    --test-threads=1 > "$OUT/gpu_tests_unfused.txt" 2>&1
  timeout 60 "$bin/gpu_decode" --test-threads=1 > "$OUT/gpu_decode_tests.txt" 2>&1
}
# Per-kernel metrics of one call after warm-up (Nsight Compute) into $OUT/ncu_NAME.csv:
# prof NAME SKIP COUNT BINARY ARGS... (PART=2, 4, 6, 7, 8; an environment assignment
# before it reaches the profiled binary).
MI=gpu__time_duration.sum,launch__registers_per_thread,launch__grid_size,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,smsp__inst_executed.sum
prof() {
  local name=$1 skip=$2 count=$3; shift 3
  timeout 90 ncu --clock-control none --cache-control none --launch-skip "$skip" --launch-count "$count" \
    --metrics $MI --csv "$@" > "$OUT/ncu_$name.csv" 2>> "$OUT/ncu.err"
}
if [[ $PART == *1* ]]; then
# Start-up with the driver's JIT cache off: this build loads the embedded SASS; BASE
# (before SASS was embedded) compiles its PTX.
for b in gpu_bench ${BASE:-}; do
  TIMEFORMAT="$b: %R s wall for gpu_bench at n = 1 (load, copy test, 1 s warm-up, 50 calls), JIT cache off"
  { time CUDA_CACHE_DISABLE=1 timeout 120 "$bin/$b" 1 > /dev/null 2>&1; } 2>> "$OUT/startup.txt"
done
timeout 120 "$bin/gpu_test" --test-threads=1 --nocapture > "$OUT/gpu_tests.txt" 2>&1
# LITE=1: only the default kernels' tests (the others' code is unchanged by a local-kernel
# change).
if [ -z "${LITE:-}" ]; then
BLOCKRES_GPU_LOCAL=general timeout 90 "$bin/gpu_test" f16_matches bf16_matches small_mixed \
  --test-threads=1 > "$OUT/gpu_tests_general.txt" 2>&1
BLOCKRES_GPU_PDL=1 timeout 90 "$bin/gpu_test" small_mixed f16_matches --test-threads=1 > "$OUT/gpu_tests_pdl.txt" 2>&1
fi
timeout 60 "$bin/gpu_decode" --test-threads=1 > "$OUT/gpu_decode_tests.txt" 2>&1

N="4096 16384 32768 65536"
bench() {  # NAME ARGS...: causal and bidirectional rows of one binary into $OUT/NAME.txt
  local name=$1; shift
  { timeout 60 "$@" $N; timeout 60 "$@" --bidirectional --blocks 0,64,128 4096 16384;
    timeout 40 "$@" --bidirectional --blocks 0 65536; } > "$OUT/$name.txt" 2>&1
}
[ -n "${BASE:-}" ] && bench base1 "$bin/$BASE"
bench current "$bin/gpu_bench"
timeout 90 "$bin/gpu_bench" --d 128 $N > "$OUT/d128.txt" 2>&1
[ -n "${BASE:-}" ] && timeout 90 "$bin/$BASE" --d 128 $N > "$OUT/d128_base.txt" 2>&1
bench current2 "$bin/gpu_bench"
more && timeout 120 python3 cuda/bench_torch.py --sdpa $N > "$OUT/sdpa.txt" 2>&1
more && [ -n "${BASE:-}" ] && bench base2 "$bin/$BASE"
more && [ -n "${PDL:-}" ] && BLOCKRES_GPU_PDL=1 bench pdl "$bin/gpu_bench"
more && timeout 60 "$bin/gpu_bench" --blocks 64,128 16384 32768 65536 > "$OUT/causal_blocks.txt" 2>&1
more && timeout 90 "$bin/gpu_bench" --d 128 --blocks 64,128 $N > "$OUT/d128_blocks.txt" 2>&1
more && [ -n "${BASE:-}" ] && timeout 90 "$bin/$BASE" --d 128 --blocks 64,128 $N > "$OUT/d128_blocks_base.txt" 2>&1
more && timeout 40 "$bin/gpu_bench" --bidirectional --d 128 4096 16384 > "$OUT/bidir_d128.txt" 2>&1
fi

if [[ $PART == *2* ]]; then
prof causal_4096 30 6 "$bin/gpu_bench" 4096
prof causal_32768 30 6 "$bin/gpu_bench" 32768
[ -n "${BASE:-}" ] && prof causal_32768_base 30 6 "$bin/$BASE" 32768
prof bidir_16384 28 14 "$bin/gpu_bench" --bidirectional --blocks 64 16384
[ -n "${BASE:-}" ] && prof bidir_16384_base 28 14 "$bin/$BASE" --bidirectional --blocks 64 16384
# Where the causal local kernel's cycles go: stall reasons, and per SASS line.
timeout 120 ncu --clock-control none -k regex:local_tc --launch-skip 5 --launch-count 1 --set full \
  --import-source no -o "$OUT/local_tc_32768" "$bin/gpu_bench" 32768 > "$OUT/ncu_local_tc.log" 2>&1
timeout 60 ncu -i "$OUT/local_tc_32768.ncu-rep" --section WarpStateStats --section SchedulerStats \
  --section Occupancy --section InstructionStats --print-details all > "$OUT/ncu_local_tc_stalls.txt" 2>&1
timeout 60 ncu -i "$OUT/local_tc_32768.ncu-rep" --page source --print-source sass --csv \
  > "$OUT/ncu_local_tc_sass.csv" 2>&1
gzip -f "$OUT/ncu_local_tc_sass.csv"
fi

if [[ $PART == *4* ]] && more; then
# Per-kernel times of one causal d = 128 call at 32768 (b = 64: the 4-warp local kernel),
# this build and BASE.
for b in gpu_bench ${BASE:-}; do
  prof "d128_32768_$b" 30 6 "$bin/$b" --d 128 --blocks 64 32768
done
fi

if [[ $PART == *5* ]]; then
# The causal block sizes 64, 96 and 128 at d = 64 and 128 (b = 96: the 6-warp tiles at
# d = 128), and the automatic b at both widths, in one call.
timeout 90 "$bin/gpu_bench" --blocks 64,96,128 16384 32768 65536 > "$OUT/blocks96_d64.txt" 2>&1
timeout 120 "$bin/gpu_bench" --d 128 --blocks 64,96,128 16384 32768 65536 > "$OUT/blocks96_d128.txt" 2>&1
timeout 60 "$bin/gpu_bench" $N > "$OUT/auto_d64.txt" 2>&1
timeout 90 "$bin/gpu_bench" --d 128 $N > "$OUT/auto_d128.txt" 2>&1
fi

if [[ $PART == *6* ]]; then
# The fused causal path (means and coarse row inside local_tc) against the separate
# kernels (BLOCKRES_GPU_FUSED=0), same binary, alternated, where the plan fuses (n = 2048,
# 4096) and just past it; both paths' tests; per-kernel times of one fused call at 4096;
# SDPA at the fused lengths.
tests_both_paths
N="2048 4096 8192 16384"
for r in 1 2; do
  timeout 60 "$bin/gpu_bench" $N > "$OUT/fused$r.txt" 2>&1
  BLOCKRES_GPU_FUSED=0 timeout 60 "$bin/gpu_bench" $N > "$OUT/unfused$r.txt" 2>&1
done
timeout 90 "$bin/gpu_bench" --d 128 $N > "$OUT/fused_d128.txt" 2>&1
BLOCKRES_GPU_FUSED=0 timeout 90 "$bin/gpu_bench" --d 128 $N > "$OUT/unfused_d128.txt" 2>&1
more && timeout 90 python3 cuda/bench_torch.py --sdpa 2048 4096 > "$OUT/sdpa.txt" 2>&1
more && prof fused_4096 20 4 "$bin/gpu_bench" 4096
fi

if [[ $PART == *7* ]]; then
# The local kernel's instruction cuts against BASE: both paths' tests, then causal timings
# of this build and BASE alternated twice (the fused path at 2048/4096 and the separate one
# from 8192), d = 128 beside them, SDPA, per-kernel times and executed instructions of one
# call at 4096 and 32768 (both builds), and the fused local kernel's stalls and SASS lines
# at 4096.
tests_both_paths
N="2048 4096 8192 16384 32768 65536"
for r in 1 2; do
  timeout 60 "$bin/$BASE" $N > "$OUT/base$r.txt" 2>&1
  timeout 60 "$bin/gpu_bench" $N > "$OUT/current$r.txt" 2>&1
done
timeout 90 "$bin/gpu_bench" --d 128 4096 32768 > "$OUT/d128.txt" 2>&1
timeout 90 "$bin/$BASE" --d 128 4096 32768 > "$OUT/d128_base.txt" 2>&1
more && timeout 90 python3 cuda/bench_torch.py --sdpa 2048 4096 32768 > "$OUT/sdpa.txt" 2>&1
for x in gpu_bench $BASE; do
  more && prof "4096_$x" 20 4 "$bin/$x" 4096
  more && prof "32768_$x" 30 6 "$bin/$x" 32768
done
if more; then
  timeout 120 ncu --clock-control none -k regex:local_tc --launch-skip 5 --launch-count 1 --set full \
    --import-source no -o "$OUT/local_tc_4096" "$bin/gpu_bench" 4096 > "$OUT/ncu_local_tc.log" 2>&1
  timeout 60 ncu -i "$OUT/local_tc_4096.ncu-rep" --section WarpStateStats --section SchedulerStats \
    --section Occupancy --print-details all > "$OUT/ncu_local_tc_4096_stalls.txt" 2>&1
  timeout 60 ncu -i "$OUT/local_tc_4096.ncu-rep" --page source --print-source sass --csv \
    > "$OUT/ncu_local_tc_4096_sass.csv" 2>&1
  gzip -f "$OUT/ncu_local_tc_4096_sass.csv"
  rm -f "$OUT/local_tc_4096.ncu-rep"
fi
fi

if [[ $PART == *8* ]]; then
# This build as the plan runs it against the separate means and coarse kernels
# (BLOCKRES_GPU_FUSED=0, same binary), BASE and ALT (another gpu_bench_<commit>, if set),
# alternated twice at the lengths N8 (default up to 65536); d = 128 both ways; SDPA;
# per-kernel times of one call at 4096 and 32768, fused and separate.
tests_both_paths
N=${N8:-2048 4096 8192 16384 32768 65536}
for r in 1 2; do
  timeout 60 "$bin/$BASE" $N > "$OUT/base$r.txt" 2>&1
  [ -z "${ALT:-}" ] || timeout 60 "$bin/$ALT" $N > "$OUT/alt$r.txt" 2>&1
  timeout 60 "$bin/gpu_bench" $N > "$OUT/current$r.txt" 2>&1
  BLOCKRES_GPU_FUSED=0 timeout 60 "$bin/gpu_bench" $N > "$OUT/unfused$r.txt" 2>&1
done
timeout 90 "$bin/gpu_bench" --d 128 4096 32768 > "$OUT/fused_d128.txt" 2>&1
BLOCKRES_GPU_FUSED=0 timeout 90 "$bin/gpu_bench" --d 128 4096 32768 > "$OUT/unfused_d128.txt" 2>&1
more && timeout 90 python3 cuda/bench_torch.py --sdpa 2048 4096 32768 > "$OUT/sdpa.txt" 2>&1
for n in 4096 32768; do
  more && prof "${n}_fused" 20 4 "$bin/gpu_bench" $n
  more && BLOCKRES_GPU_FUSED=0 prof "${n}_unfused" 30 6 "$bin/gpu_bench" $n
done
fi

if [[ $PART == *9* ]]; then
tests_both_paths  # the tests alone (both paths) and the decoder's
fi

if [[ $PART == *3* ]]; then
for tool in memcheck racecheck synccheck; do
  echo "--- $tool" >> "$OUT/sanitizers.txt"
  timeout 120 compute-sanitizer --tool $tool "$bin/gpu_test" small_mixed_case non_finite \
    --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
done
# The separate means and coarse kernels: the local kernel's whole blocks then wait for V
# on an mbarrier (not on the fused path, which sums V first).
for tool in memcheck racecheck; do
  echo "--- $tool (BLOCKRES_GPU_FUSED=0)" >> "$OUT/sanitizers.txt"
  BLOCKRES_GPU_FUSED=0 timeout 120 compute-sanitizer --tool $tool "$bin/gpu_test" small_mixed_case \
    --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
done
echo "--- memcheck (decoder)" >> "$OUT/sanitizers.txt"
timeout 60 compute-sanitizer --tool memcheck "$bin/gpu_decode" refused device_buffers reset \
  --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
fi

echo "== summary"
cat "$OUT/machine.txt"
for f in gpu_tests gpu_tests_general gpu_tests_pdl gpu_tests_unfused gpu_decode_tests; do
  [ -f "$OUT/$f.txt" ] || continue
  echo "$f: $(grep -E '^test result' "$OUT/$f.txt" | tail -1) $(grep -c FAILED "$OUT/$f.txt") FAILED lines"
done
grep -hE "panicked|assert" "$OUT"/gpu_tests*.txt 2>/dev/null | head -6
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizers.txt" 2>/dev/null | paste -sd' ' | sed 's/=========//g'
grep -h "wall for" "$OUT/startup.txt" 2>/dev/null
python3 cuda/perf_summary.py "$OUT" | tee "$OUT/summary.txt"
tar czf /tmp/perf_all.tgz -C "$OUT" . && mv /tmp/perf_all.tgz "$OUT/all.tgz"
