"""ONNX Runtime benchmark of blockres.ResolventAttention (one run, prints a markdown table).

Per sequence length n, with B = 1, H = 8, d = 64, float32, causal, γ = 0.5, all three
in the same onnxruntime with the same session options:

- ``block``: our op, ``structure=block`` (automatic block size);
- ``dense``: our op, ``structure=dense`` (the exact operator);
- ``std-ops``: the best dense ChaCAL a user can build from standard ONNX ops today:
  MatMul, a causal Where mask and Softmax for A, then the resolvent by its truncated
  Neumann series ``Y = (1−γ)·Σ_{t<T} γ^t A^{t+1} V`` evaluated as T MatMuls by γA
  (O(T·n²·d); ONNX has no triangular solve or inverse). ``T = ceil(log 1e-4 / log γ)``
  bounds the truncation by γ^T ≤ 1e-4 relative to max|V|; the table reports the error
  actually reached against our dense op.

Run: ``.venv/bin/python onnx/bench_ort.py [--ns 512,1024,...] [--threads N]``
(build the library first: ``cargo build --release``).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blockres_onnx as br  # noqa: E402

H, D, GAMMA = 8, 64, 0.5


def neumann_terms(gamma: float, tol: float = 1e-4) -> int:
    return math.ceil(math.log(tol) / math.log(gamma))


def standard_ops_model(n: int, d: int, gamma: float, terms: int):
    """Dense causal ChaCAL from standard ONNX ops (opset 17)."""
    f = TensorProto.FLOAT
    c = lambda name, value, dt=f: helper.make_tensor(name, dt, [], [value])  # noqa: E731
    nodes = [
        helper.make_node("Transpose", ["K"], ["Kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["Q", "Kt"], ["S0"]),
        helper.make_node("Mul", ["S0", "scale"], ["S"]),
        # Causal mask, folded to a constant when the session is built.
        helper.make_node("Expand", ["true", "nn"], ["ones"]),
        helper.make_node("Trilu", ["ones"], ["mask"], upper=0),
        helper.make_node("Where", ["mask", "S", "neg_inf"], ["Sm"]),
        helper.make_node("Softmax", ["Sm"], ["A"], axis=-1),
        helper.make_node("Mul", ["A", "gamma"], ["gA"]),
        helper.make_node("MatMul", ["A", "V"], ["X0"]),
    ]
    for t in range(1, terms):
        nodes.append(helper.make_node("MatMul", ["gA", f"X{t - 1}"], [f"X{t}"]))
    nodes.append(helper.make_node("Sum", [f"X{t}" for t in range(terms)], ["W"]))
    nodes.append(helper.make_node("Mul", ["W", "one_minus_gamma"], ["Y"]))
    inits = [
        c("scale", 1.0 / math.sqrt(d)),
        c("neg_inf", -math.inf),
        c("gamma", gamma),
        c("one_minus_gamma", 1.0 - gamma),
        helper.make_tensor("true", TensorProto.BOOL, [], [True]),
        helper.make_tensor("nn", TensorProto.INT64, [2], [n, n]),
    ]
    shape = [1, H, n, d]
    graph = helper.make_graph(
        nodes,
        "chacal_standard_ops",
        [helper.make_tensor_value_info(x, f, shape) for x in "QKV"],
        [helper.make_tensor_value_info("Y", f, shape)],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def session_options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    return br.register(so)


def time_runs(sess, feeds, min_runs=3, min_seconds=1.0, max_runs=50):
    sess.run(None, feeds)  # warm-up: allocations, arena growth
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        (y,) = sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), y


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="512,1024,2048,4096,8192", help="sequence lengths")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = ORT default)")
    ap.add_argument("--max-std-n", type=int, default=8192, help="largest n for the standard-ops graph")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    terms = neumann_terms(GAMMA)
    so = session_options(args.threads)
    rng = np.random.default_rng(0)

    print(f"# blockres ORT benchmark — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"onnxruntime {ort.__version__}, {cpu_name()}, {os.cpu_count()} logical CPUs, "
        f"intra-op threads {'default' if not args.threads else args.threads}, "
        f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}"
    )
    print(f"B=1, H={H}, d={D}, float32, causal, γ={GAMMA}; std-ops: Neumann series, T={terms} terms\n")
    print("| n | block (ms) | dense (ms) | std-ops (ms) | std-ops / block | dense / block | std-ops err vs dense |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        q = rng.standard_normal((1, H, n, D)).astype(np.float32)
        k = rng.standard_normal((1, H, n, D)).astype(np.float32)
        v = rng.standard_normal((1, H, n, D)).astype(np.float32)
        feeds = {"Q": q, "K": k, "V": v}
        shape = (1, H, n, D)
        blk = ort.InferenceSession(
            br.make_model(q_shape=shape, k_shape=shape, v_shape=shape, gamma=GAMMA).SerializeToString(),
            so,
            providers=["CPUExecutionProvider"],
        )
        den = ort.InferenceSession(
            br.make_model(q_shape=shape, k_shape=shape, v_shape=shape, gamma=GAMMA, structure="dense").SerializeToString(),
            so,
            providers=["CPUExecutionProvider"],
        )
        t_blk, _ = time_runs(blk, feeds)
        t_den, y_den = time_runs(den, feeds)
        del blk, den
        if n <= args.max_std_n:
            try:
                std = ort.InferenceSession(
                    standard_ops_model(n, D, GAMMA, terms).SerializeToString(), so, providers=["CPUExecutionProvider"]
                )
                t_std, y_std = time_runs(std, feeds, min_runs=2, min_seconds=0.0)
                del std
                err = float(np.max(np.abs(y_std - y_den)) / np.max(np.abs(y_den)))
                std_cols = f"{t_std * 1e3:.1f} | {t_std / t_blk:.1f}×"
                err_col = f"{err:.1e}"
            except Exception as e:  # e.g. out of memory for the n×n matrices
                std_cols, err_col = f"failed: {type(e).__name__} | –", "–"
        else:
            std_cols, err_col = "not run | –", "–"
        print(f"| {n} | {t_blk * 1e3:.2f} | {t_den * 1e3:.1f} | {std_cols} | {t_den / t_blk:.1f}× | {err_col} |", flush=True)


if __name__ == "__main__":
    main()
