#!/usr/bin/env bash
# The ONNX Runtime op's GPU path, on the GPU machine, with that machine's onnxruntime
# (a CPU-only build is enough: the op copies to and from the device itself). No Rust
# there: build the library here and carry it.
#
#   here:  cargo build --release --features cuda --lib
#          mkdir -p .dev/ort && cp target/release/libblockres.so .dev/ort/
#   there: bash cuda/ort_gpu_check.sh .dev/ort/libblockres.so      (repo root; carry .dev/ort)
#
# Runs onnx/tests/test_op_gpu.py (forced GPU against the float64 reference for f32, f16,
# bf16; auto vs cpu; error statuses; 4 threads on one session), prints a summary, then
# times one n = 16384, H = 16, d = 64 call with device = cpu and device = gpu (median of
# several runs). Logs go to $OUT when it is set, else /tmp/ort_gpu_check.
set -uo pipefail
lib=${1:?usage: bash cuda/ort_gpu_check.sh /path/to/libblockres.so (built with --features cuda)}
[ -f "$lib" ] || { echo "no library at $lib" >&2; exit 2; }
lib=$(readlink -f "$lib")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
py=${PYTHON:-python3}
logs=${OUT:-/tmp/ort_gpu_check}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 BLOCKRES_LIBRARY="$lib"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 || echo "nvidia-smi failed"
"$py" -c 'import sys, numpy, onnx, onnxruntime as o; print(f"python {sys.version.split()[0]}, numpy {numpy.__version__}, onnx {onnx.__version__}, onnxruntime {o.__version__} ({o.get_device()}), library {sys.argv[1]}")' "$lib"

echo "== pytest onnx/tests/test_op_gpu.py"
BLOCKRES_GPU_TESTS=1 timeout 480 "$py" -m pytest -q -s -p no:cacheprovider -rfEs \
  onnx/tests/test_op_gpu.py >"$logs/ort_gpu_tests.txt" 2>&1
rc=$?
grep -E "^=* ?[0-9]+ (passed|failed|errors?|skipped)" "$logs/ort_gpu_tests.txt" | tail -1
grep -E "^(FAILED|ERROR)" "$logs/ort_gpu_tests.txt" | head -20
# Largest relative error against the float64 reference, per element type.
grep -oE "(float32|float16|bfloat16) [a-z]+ n=[0-9]+: rel err [0-9.e+-]+" "$logs/ort_gpu_tests.txt" |
  awk '{e=$NF+0; if (e > m[$1]) {m[$1]=e; c[$1]=$2" "$3}} END {for (t in m) printf "max rel err %-9s %.3e  (%s)\n", t, m[t], c[t]}' | sort
grep -oE "auto vs cpu \([a-z]+\): rel err [0-9.e+-]+" "$logs/ort_gpu_tests.txt"
if [ $rc -ne 0 ]; then
  echo "pytest exit status $rc; its error lines (counted), then the log's tail:"
  grep -E "^E  " "$logs/ort_gpu_tests.txt" | sort | uniq -c | sort -rn | head -15
  tail -25 "$logs/ort_gpu_tests.txt"
fi

echo "== timing: one call, B=1 H=16 n=16384 dk=dv=64, through onnxruntime (wall time of session.run)"
timeout 240 "$py" - <<'EOF' 2>&1 | tee "$logs/ort_gpu_timing.txt"
import statistics, sys, time
sys.path[:0] = ["onnx", "onnx/tests"]
import numpy as np
from test_op import make_session

B, H, n, d = 1, 16, 16384, 64
rng = np.random.default_rng(0)
x = [rng.standard_normal((B, H, n, d)).astype(np.float32) for _ in range(3)]
print(f"{'type':<22}{'device':<8}{'first (ms)':>12}{'median (ms)':>13}{'min (ms)':>10}{'runs':>6}")
medians = {}
for dtype, label, np_t in (("float16", "f16", np.float16), ("bfloat16", "bf16 (+ Casts f32<->bf16)", np.float32)):
    feeds = dict(zip("QKV", (a.astype(np_t) for a in x)))
    for device in ("cpu", "gpu", "auto"):
        sess = make_session(dtype, device=device)
        t0 = time.perf_counter()
        sess.run(None, feeds)
        first = (time.perf_counter() - t0) * 1e3
        runs = 5 if device == "cpu" else 15
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            ts.append((time.perf_counter() - t0) * 1e3)
        medians[(label, device)] = statistics.median(ts)
        print(f"{label:<22}{device:<8}{first:>12.2f}{statistics.median(ts):>13.2f}{min(ts):>10.2f}{runs:>6}")
for label in ("f16", "bf16 (+ Casts f32<->bf16)"):
    print(f"{label}: gpu {medians[(label, 'cpu')] / medians[(label, 'gpu')]:.1f}x faster than cpu (medians)")
EOF
trc=${PIPESTATUS[0]}
echo "== summary: pytest exit $rc, timing exit $trc (logs in $logs)"
[ $rc -eq 0 ] && [ $trc -eq 0 ]
