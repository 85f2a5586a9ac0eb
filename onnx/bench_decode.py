"""ONNX Runtime benchmark of decoding with blockres.ResolventAttentionWithCache (one run,
prints a markdown table).

One step = one new token appended to a context of P tokens, B = 1, H = 1, d = 64,
float32, γ = 0.9, through onnxruntime's CPU provider with the state in shared buffers:
each state tensor is one preallocated OrtValue bound as both ``past_x`` and
``present_x`` (IOBinding), and the step's inputs and output are bound once to
preallocated OrtValues updated in place, so a step is ``run_with_iobinding`` alone.

- ``block`` (b = 128, ``coarse_query = first``): the state is filled by a real prefill
  of P random tokens through the op;
- ``dense``: the key and resolved-value caches are filled with random values (a dense
  prefill of 2^20 tokens would take hours; a step's cost depends only on P).

Time per step: the median over the timed steps (P grows by their number, at most 0.2%
of the smallest P). Run: ``.venv/bin/python onnx/bench_decode.py [--max-log-p 20]``
(build the library first: ``cargo build --release``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import blockres_onnx as br  # noqa: E402
from blockres_onnx.cache import Cache, make_cache_model  # noqa: E402

D, B_SIZE, GAMMA = 64, 128, 0.9


def steps_for(structure, p):
    return 200 if structure == "block" or p <= 1 << 14 else 20


def bench(sess, structure, p, rng):
    n_steps = steps_for(structure, p)
    cache = Cache(1, 1, 1, D, D, capacity=p + n_steps + 5, block_size=B_SIZE if structure == "block" else 0)
    if structure == "block":
        x = rng.standard_normal((3, 1, 1, p, D), dtype=np.float32)
        cache.run(sess, x[0], x[1], x[2])
    else:
        cache.arrays["key"][:, :, :p] = rng.standard_normal((1, 1, p, D), dtype=np.float32)
        cache.arrays["value"][:, :, :p] = rng.standard_normal((1, 1, p, D), dtype=np.float32)
        cache.length = p
    q, k, v = (np.zeros((1, 1, 1, D), np.float32) for _ in range(3))
    past = np.zeros(1, np.int64)
    y = np.zeros((1, 1, 1, D), np.float32)
    io = sess.io_binding()
    vals = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in (("query", q), ("key", k), ("value", v), ("past_sequence_length", past))}
    for name, val in vals.items():
        io.bind_ortvalue_input(name, val)
    io.bind_ortvalue_output("output", ort.OrtValue.ortvalue_from_numpy(y))
    for name, val in cache.values.items():
        io.bind_ortvalue_input("past_" + name, val)
        io.bind_ortvalue_output("present_" + name, val)
    tokens = rng.standard_normal((n_steps + 5, 3, D), dtype=np.float32)
    times = []
    length = cache.length
    for i in range(n_steps + 5):  # 5 warm-up steps
        q[0, 0, 0], k[0, 0, 0], v[0, 0, 0] = tokens[i]
        past[0] = length
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        dt = time.perf_counter() - t0
        length += 1
        if i >= 5:
            times.append(dt)
    assert np.isfinite(y).all()
    state_mb = sum(a.nbytes for a in cache.arrays.values()) / 2**20
    return statistics.median(times) * 1e6, n_steps, state_mb


def baseline_us(so):
    """onnxruntime's own cost of one run_with_iobinding of a one-node graph (Identity
    on a [1, 1, 1, d] tensor, bound once): the floor under any step time here."""
    from onnx import TensorProto, helper

    vi = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 1, D])  # noqa: E731
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [vi("x")], [vi("y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    sess = ort.InferenceSession(m.SerializeToString(), so)
    io = sess.io_binding()
    x, y = np.zeros((1, 1, 1, D), np.float32), np.zeros((1, 1, 1, D), np.float32)
    io.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x))
    io.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(y))
    times = []
    for _ in range(2000):
        t0 = time.perf_counter()
        sess.run_with_iobinding(io)
        times.append(time.perf_counter() - t0)
    return statistics.median(times[100:]) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-log-p", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    so = br.register(ort.SessionOptions())
    so.intra_op_num_threads = args.threads
    rng = np.random.default_rng(1)
    sessions = {
        "block": ort.InferenceSession(make_cache_model(gamma=GAMMA, structure="block", block_size=B_SIZE).SerializeToString(), so),
        "dense": ort.InferenceSession(make_cache_model(gamma=GAMMA, structure="dense").SerializeToString(), so),
    }
    print(
        f"# bench_decode: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, onnxruntime {ort.__version__}, "
        f"B=1 H=1 d={D} float32 γ={GAMMA} block b={B_SIZE}",
        flush=True,
    )
    rows = {}
    for log_p in range(10, args.max_log_p + 1, 2):
        p = 1 << log_p
        for structure, sess in sessions.items():
            us, n, mb = bench(sess, structure, p, rng)
            rows[(structure, p)] = (us, n, mb)
            print(f"  {structure} P=2^{log_p}: {us:.1f} µs/step ({n} steps, state {mb:.1f} MiB)", file=sys.stderr, flush=True)
    print(f"\nonnxruntime's own cost of a one-node run with the same bindings (Identity): {baseline_us(so):.1f} µs")
    print("\n| P | block µs/step | dense µs/step | dense / block | block state MiB |")
    print("|---:|---:|---:|---:|---:|")
    for log_p in range(10, args.max_log_p + 1, 2):
        p = 1 << log_p
        b, d = rows[("block", p)], rows[("dense", p)]
        print(f"| 2^{log_p} | {b[0]:.1f} | {d[0]:.1f} | {d[0] / b[0]:.0f}× | {b[2]:.1f} |")


if __name__ == "__main__":
    main()
