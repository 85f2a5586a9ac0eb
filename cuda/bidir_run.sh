#!/usr/bin/env bash
# The bidirectional path on the GPU machine, one call: the GPU tests (both local kernels
# for 16-bit types), compute-sanitizer on the small cases, a block-size sweep
# of gpu_bench --bidirectional (B=1, H=16, d=64, bf16), one SDPA hop (causal and not) in
# the same call for the bars, and Nsight Compute times per kernel for one call at
# n = 16384 (b = 64: 14 launches). Usage there (BINDIR holds gpu_test and gpu_bench):
#   bash cuda/bidir_run.sh BINDIR
# With BASE=NAME (a gpu_bench built from an earlier commit, in BINDIR), the same sweep
# runs with it in the same call, before and after the current one, for same-run ratios.
set -o pipefail
bin=$(bash "$(dirname "$0")/unpack_bins.sh" "${1:?usage: bash cuda/bidir_run.sh BINDIR}")
OUT=${OUT:-/tmp/blockres_bidir}
mkdir -p "$OUT"
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } > "$OUT/machine.txt"
timeout 200 "$bin/gpu_test" --test-threads=1 --nocapture > "$OUT/gpu_tests.txt" 2>&1
BLOCKRES_GPU_LOCAL=general timeout 200 "$bin/gpu_test" f16_matches bf16_matches small_mixed \
  --test-threads=1 --nocapture > "$OUT/gpu_tests_general.txt" 2>&1
for tool in memcheck racecheck synccheck; do  # small cases, bidirectional b = 48 among them
  echo "--- $tool" >> "$OUT/sanitizers.txt"
  timeout 120 compute-sanitizer --tool $tool "$bin/gpu_test" small_mixed_case --test-threads=1 >> "$OUT/sanitizers.txt" 2>&1
done
if [ -n "${BASE:-}" ]; then
  timeout 100 "$bin/$BASE" --bidirectional --blocks ${BLOCKS:-0,32,64,128} 4096 16384 > "$OUT/bidir_sweep_base1.txt" 2>&1
fi
timeout 150 "$bin/gpu_bench" --bidirectional --blocks ${BLOCKS:-0,32,64,128} 4096 16384 > "$OUT/bidir_sweep.txt" 2>&1
# The same binary with the pivot-by-pivot local kernel (local_bidir) for 16-bit types.
BLOCKRES_GPU_LOCAL=general timeout 100 "$bin/gpu_bench" --bidirectional --blocks 64,128 4096 16384 > "$OUT/bidir_sweep_general.txt" 2>&1
if [ -n "${BASE:-}" ]; then
  timeout 100 "$bin/$BASE" --bidirectional --blocks ${BLOCKS:-0,32,64,128} 4096 16384 > "$OUT/bidir_sweep_base2.txt" 2>&1
fi
timeout 100 "$bin/gpu_bench" --bidirectional --blocks ${BLOCKS65:-0,64,128} 65536 > "$OUT/bidir_65536.txt" 2>&1
timeout 100 python3 cuda/bench_torch.py --sdpa 4096 16384 65536 > "$OUT/sdpa.txt" 2>&1
timeout 150 ncu --clock-control none --cache-control none --launch-skip 28 --launch-count 14 --metrics gpu__time_duration.sum,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size \
  --csv "$bin/gpu_bench" --bidirectional --blocks 64 16384 > "$OUT/ncu_bidir_16384.csv" 2> "$OUT/ncu.err"
echo "== summary"
cat "$OUT/machine.txt"
echo "gpu_tests: $(grep -E '^test result' "$OUT/gpu_tests.txt" | tail -1)"
echo "gpu_tests (general): $(grep -E '^test result' "$OUT/gpu_tests_general.txt" | tail -1)"
grep -h "rel err" "$OUT/gpu_tests.txt" | awk '{print $1, $NF}' | sort -k2 -g | awk '{m[$1]=$2} END {for (k in m) print "max rel err", k, m[k]}'
grep -hE "FAILED|panicked" "$OUT/gpu_tests.txt" "$OUT/gpu_tests_general.txt" | head -10
grep -E "^---|ERROR SUMMARY" "$OUT/sanitizers.txt" | paste - - | sed 's/=========//'
if [ -n "${BASE:-}" ]; then echo "-- $BASE (before)"; tail -8 "$OUT/bidir_sweep_base1.txt"; echo "-- $BASE (after)"; tail -8 "$OUT/bidir_sweep_base2.txt"; echo "-- current"; fi
tail -12 "$OUT/bidir_sweep.txt"; echo "-- BLOCKRES_GPU_LOCAL=general"; tail -6 "$OUT/bidir_sweep_general.txt"
tail -4 "$OUT/bidir_65536.txt"; tail -5 "$OUT/sdpa.txt"
python3 - "$OUT/ncu_bidir_16384.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: sys.exit(print("ncu: no rows"))
h = rows[0]; k, mn, v = h.index("Kernel Name"), h.index("Metric Name"), h.index("Metric Value")
t = collections.OrderedDict()
for r in rows[1:]:
    if r[mn] == "gpu__time_duration.sum":
        name = r[k].split("(")[0]; t.setdefault(name, []).append(float(r[v].replace(",", "")))
unit = [r for r in rows[1:] if r[mn] == "gpu__time_duration.sum"][0][h.index("Metric Unit")]
for name, xs in t.items(): print(f"ncu {name}: {len(xs)} launches, {sum(xs):.1f} {unit}")
PY
