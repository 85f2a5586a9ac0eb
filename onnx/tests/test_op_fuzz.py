"""Random attributes, shapes and values through the op in onnxruntime for a fixed time
budget (issue 10): every call must give finite output or an error status — no crash,
no hang, no NaN/∞ from finite inputs. Runs in a subprocess (a crash fails the test with
its seed instead of killing the suite); BLOCKRES_FUZZ_SECONDS sets the budget.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_op import SEED

ONNX_DIR = Path(__file__).resolve().parents[1]
BUDGET = float(os.environ.get("BLOCKRES_FUZZ_SECONDS", "20"))

FUZZ = r"""
import sys, time
import numpy as np
import onnxruntime as ort
sys.path.insert(0, ONNX_DIR)
import blockres_onnx as br

rng = np.random.default_rng(SEED)
pick = lambda xs: xs[int(rng.integers(len(xs)))]
end = time.monotonic() + BUDGET
calls = errors = 0
while time.monotonic() < end:
    attrs = {}
    for name, values in {
        "gamma": [0.0, 0.3, 0.9, 0.999, 0.99999994, 1.0, -0.1, float("nan")],
        "block_size": [0, 1, 3, 16, 1000, -5],
        "causal": [0, 1, 1, 2],
        "scale": [0.0, 0.0, 1e-30, 3.4e38, -1.0],
        "structure": ["block", "block", "dense", "strided", "fixed", "topk", "nope", "block\0dense"],
        "stride": [0, 1, 5, -2],
        "summary": [1, 0, 3, 100],
        "alpha": [0.0, 0.5, 3.0, -1.0],
        "c_exp": [0.0, 0.5, 1.5],
        "coarse_query": ["mean", "first", "middle"],
    }.items():
        if rng.random() < 0.5:
            attrs[name] = pick(values)
    dtype = pick(["float32", "float16"])
    b, hkv = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    h = hkv * int(rng.integers(1, 3)) if rng.random() < 0.9 else 3
    n, dk, dv = int(pick([1, 2, 7, 16, 33, 100, 257])), int(rng.integers(1, 20)), int(rng.integers(1, 20))
    nk = n if rng.random() < 0.95 else n + 1
    mag = pick([1.0, 1.0, 30.0, 1e-30, 1e19]) if dtype == "float32" else pick([1.0, 30.0, 6e4])
    np_t = np.float16 if dtype == "float16" else np.float32
    q = (rng.standard_normal((b, h, n, dk)) * mag).astype(np_t)
    k = (rng.standard_normal((b, hkv, nk, dk)) * mag).astype(np_t)
    v = (rng.standard_normal((b, hkv, nk, dv)) * pick([1.0, 1e30 if dtype == "float32" else 6e4])).astype(np_t)
    if not (np.isfinite(q).all() and np.isfinite(k).all() and np.isfinite(v).all()):
        continue  # finite inputs only: NaN/∞ inputs are refused by design
    calls += 1
    try:
        sess = br.session(br.make_model(dtype, q_shape=None, k_shape=None, v_shape=None, **attrs))
        (y,) = sess.run(None, {"Q": q, "K": k, "V": v})
    except Exception as e:
        errors += 1
        msg = str(e)
        assert "internal error" not in msg and "panic" not in msg, (attrs, q.shape, k.shape, v.shape, msg)
        continue
    assert y.shape == (b, h, n, dv), (attrs, y.shape)
    assert np.isfinite(y).all(), ("non-finite output", attrs, dtype, q.shape, mag)
print(f"ok {calls} calls, {errors} refused")
"""


def test_fuzz_attributes_shapes_and_values():
    code = f"ONNX_DIR = {str(ONNX_DIR)!r}\nSEED = {SEED}\nBUDGET = {BUDGET}\n" + FUZZ
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=BUDGET + 120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"fuzz run hung (BLOCKRES_SEED={SEED})") from None
    assert r.returncode == 0 and r.stdout.startswith("ok"), (
        f"BLOCKRES_SEED={SEED}: status {r.returncode}\n{r.stdout[-1000:]}\n{r.stderr[-3000:]}"
    )
    print(r.stdout)
