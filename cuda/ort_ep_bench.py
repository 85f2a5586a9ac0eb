#!/usr/bin/env python3
"""The op on onnxruntime's CUDA execution provider against PyTorch SDPA, in one process:
B = 1, H = 16, d = 64, float16, causal block (block_size 128), inputs and output bound
on the GPU with IOBinding (torch tensors' memory).

    PYTHONPATH=/tmp/ortgpu BLOCKRES_LIBRARY=.../libblockres.so python3 cuda/ort_ep_bench.py [N ...]

Per n: the median wall time of one `run_with_iobinding` (+ device synchronize) over 30
runs after warm-up; the sum of the op's GPU kernel times per run (torch.profiler/CUPTI,
which sees every kernel of the process, ORT's too); SDPA causal (one hop) timed the same
way; and the same op with CUDA graph capture when the provider takes it.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch  # first: loads the CUDA 13 libraries onnxruntime-gpu needs

import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
import blockres_onnx as br  # noqa: E402

H, D = 16, 64
B_SIZE = int(os.environ.get("BLOCK", "128"))
KERNELS = ("block_means", "coarse", "local", "reduced", "combine")


def wall_ms(fn, reps=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def session(graph: bool):
    opts = {"enable_cuda_graph": "1"} if graph else {}
    so = br.register(ort.SessionOptions())
    model = br.make_model("float16", block_size=B_SIZE, gamma=0.5)
    return ort.InferenceSession(
        model.SerializeToString(), so, providers=[("CUDAExecutionProvider", opts), "CPUExecutionProvider"]
    )


def bound(sess, q, k, v, y):
    b = sess.io_binding()
    for name, t in zip("QKV", (q, k, v)):
        b.bind_input(name, "cuda", 0, np.float16, tuple(t.shape), t.data_ptr())
    b.bind_output("Y", "cuda", 0, np.float16, tuple(y.shape), y.data_ptr())
    return b


def kernel_ms(fn, runs=10):
    """GPU time of the op's kernels per run, from CUPTI."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    total = 0.0
    for e in prof.key_averages():
        if any(k in e.key for k in KERNELS):
            total += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    return total / runs / 1e3


def main():
    ns = [int(a) for a in sys.argv[1:]] or [16384, 65536]
    rows = []
    for n in ns:
        g = torch.Generator(device="cuda").manual_seed(n)
        q, k, v = (torch.randn(1, H, n, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(3))
        y = torch.empty_like(q)
        sess = session(False)
        b = bound(sess, q, k, v, y)
        op = wall_ms(lambda: sess.run_with_iobinding(b))
        kern = kernel_ms(lambda: sess.run_with_iobinding(b))
        sdpa = wall_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
        try:
            gs = session(True)
            gb = bound(gs, q, k, v, y)
            graph = wall_ms(lambda: gs.run_with_iobinding(gb))
        except Exception as e:  # noqa: BLE001 - reported in the table
            graph = float("nan")
            print(f"n={n}: CUDA graph capture failed: {e}")
        rows.append((n, op, kern, graph, sdpa))
        del q, k, v, y
        torch.cuda.empty_cache()
    print(f"ORT {ort.__version__} CUDA EP, torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"B=1 H=16 d=64 f16 causal block b={B_SIZE} (0: the crate rule); medians of 30 runs (ms)")
    print(f"{'n':>7} {'op (ORT run)':>13} {'op kernels':>11} {'run/kernels':>12} {'op, CUDA graph':>15} {'SDPA':>8} {'SDPA/op':>8}")
    for n, op, kern, graph, sdpa in rows:
        print(f"{n:>7} {op:>13.3f} {kern:>11.3f} {op / kern:>12.2f} {graph:>15.3f} {sdpa:>8.3f} {sdpa / op:>8.2f}")


if __name__ == "__main__":
    main()
