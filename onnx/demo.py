"""Run blockres.ResolventAttention in onnxruntime on synthetic input and print a table.

The input is segmented: tokens come in spans that share a topic vector, so attention
mass sits mostly inside spans (the structure `block` is built for; the demo sets
`block_size` to the span length). The table compares
the op's `block` and `dense` structures on the same input: time and how far the
subquadratic result is from the exact one.

Run: ``.venv/bin/python onnx/demo.py`` (after ``cargo build --release``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blockres_onnx as br  # noqa: E402

H, HKV, D, GAMMA, SPAN = 8, 2, 64, 0.5, 64


def segmented(rng, n, span=64, strength=1.0):
    """Q, K, V [1, H|HKV, n, D] whose tokens share a topic within each span."""
    topics = rng.standard_normal((n // span + 1, D))[np.arange(n) // span]
    q = rng.standard_normal((1, H, n, D)) + strength * topics
    k = rng.standard_normal((1, HKV, n, D)) + strength * topics
    v = rng.standard_normal((1, HKV, n, D))
    return q.astype(np.float32), k.astype(np.float32), v.astype(np.float32)


def timed(sess, feeds, runs=3):
    sess.run(None, feeds)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        (y,) = sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return best, y


def main():
    rng = np.random.default_rng(0)
    print(f"blockres.ResolventAttention in onnxruntime {ort.__version__} ({br.library_path()})")
    print(f"B=1, H={H} (GQA, {HKV} K/V heads), d={D}, causal, γ={GAMMA}; synthetic input in spans of {SPAN} tokens, block_size={SPAN}\n")
    print("| n | type | block (ms) | dense (ms) | dense / block | rel. diff block vs dense |")
    print("|---:|---|---:|---:|---:|---:|")
    for n, dtype in [(512, "float32"), (2048, "float32"), (2048, "float16")]:
        q, k, v = segmented(rng, n, SPAN)
        np_t = np.float16 if dtype == "float16" else np.float32
        feeds = {"Q": q.astype(np_t), "K": k.astype(np_t), "V": v.astype(np_t)}
        t_b, y_b = timed(br.session(dtype=dtype, gamma=GAMMA, block_size=SPAN), feeds)
        t_d, y_d = timed(br.session(dtype=dtype, gamma=GAMMA, structure="dense"), feeds)
        y_b, y_d = y_b.astype(np.float64), y_d.astype(np.float64)
        diff = np.linalg.norm(y_b - y_d) / np.linalg.norm(y_d)
        print(f"| {n} | {dtype} | {t_b * 1e3:.1f} | {t_d * 1e3:.1f} | {t_d / t_b:.1f}× | {diff:.3f} |")
    # A property the op keeps exactly: constant values pass through unchanged.
    q, k, _ = segmented(rng, 300)
    v = np.full((1, HKV, 300, D), 3.0, np.float32)
    (y,) = br.session(gamma=0.9).run(None, {"Q": q, "K": k, "V": v})
    print(f"\nconstant V = 3 → max |Y − 3| = {np.max(np.abs(y - 3.0)):.1e}")


if __name__ == "__main__":
    main()
