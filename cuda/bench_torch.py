#!/usr/bin/env python3
"""PyTorch baselines for the GPU benchmark (B=1, H=16, d=64, causal, bf16 inputs).

- torch SDPA causal (FlashAttention, bf16, one hop);
- exact ChaCAL: f32 softmax over the full causal score matrix, then
  solve_triangular(I − γA, A·V) (out of memory is reported, not hidden);
- the blockwise method of SPEC §2 written as batched PyTorch (f32), same b as blockres;
- a device-to-device copy, the bandwidth ceiling.

    python cuda/bench_torch.py [--dump DIR] [--block B] N ...
    python cuda/bench_torch.py --sdpa N ...   (SDPA only: causal and not, d = 64 and 128)

With --dump DIR (written by examples/gpu_bench.rs) it also checks blockres' output for
the smallest n against this blockwise implementation run in float64.
"""
import math
import time
import sys

import numpy as np
import torch

H, D, GAMMA = 16, 64, 0.5
dev = "cuda"


def auto_block_size(n, d=D):  # same rule as blockres::gpu::auto_block_size (src/gpu/plan.rs)
    b = 64 if n <= 24_576 else (128 if d <= 64 else 96)
    per = -(-n // 4096)  # ceil(n / 4096): m stays ≤ 4096
    b = max(b, -(-per // 16) * 16)
    return min(b, max(n, 1))


def timeit(fn, reps=20, warm=3):
    # At least `warm` calls and 0.3 s, so the clocks have ramped up (as gpu_bench does).
    t0 = time.perf_counter()
    i = 0
    while i < warm or time.perf_counter() - t0 < 0.3:
        fn()
        torch.cuda.synchronize()
        i += 1
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b))
    return float(np.median(ts))


def chacal_exact(q, k, v, gamma):
    """[BH, n, d] → (1−γ)·(I−γA)⁻¹·A·V with A the causal softmax, in f32."""
    n = q.shape[1]
    s = (q.float() @ k.float().transpose(1, 2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    a = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    del s
    x = a @ v.float()
    m = torch.eye(n, device=q.device) - gamma * a
    del a
    w = torch.linalg.solve_triangular(m, x, upper=False)
    return (1 - gamma) * w


def blockwise(q, k, v, gamma, b, dtype=torch.float32):
    """SPEC §2 evaluation, batched over heads and blocks. q, k, v: [BH, n, d]."""
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    bh, n, dk = q.shape
    dv = v.shape[-1]
    m = -(-n // b)
    pad = m * b - n
    if pad:
        q = torch.nn.functional.pad(q, (0, 0, 0, pad))
        k = torch.nn.functional.pad(k, (0, 0, 0, pad))
        v = torch.nn.functional.pad(v, (0, 0, 0, pad))
    scale = 1.0 / math.sqrt(dk)
    cnt = torch.full((m,), float(b), device=q.device, dtype=dtype)
    cnt[-1] = n - (m - 1) * b
    qb, kb, vb = q.view(bh, m, b, dk), k.view(bh, m, b, dk), v.view(bh, m, b, dv)
    qbar, kbar, vbar = (x.sum(2) / cnt[:, None] for x in (qb, kb, vb))
    L = scale * qbar @ kbar.transpose(1, 2) + cnt.log()[None, None, :]
    lower = torch.ones(m, m, dtype=torch.bool, device=q.device).tril(-1)
    L = L.masked_fill(~lower, float("-inf"))
    sigma = L.amax(-1)  # −inf on block row 0
    sig_f = torch.where(torch.isinf(sigma), torch.zeros_like(sigma), sigma)
    G = torch.exp(L - sig_f[..., None]).masked_fill(~lower, 0.0)
    gsum = G.sum(-1)
    S = scale * qb @ kb.transpose(2, 3)
    tri = torch.ones(b, b, dtype=torch.bool, device=q.device).tril()
    S = S.masked_fill(~tri, float("-inf"))
    mu = torch.maximum(S.amax(-1), sigma[..., None])
    E = torch.exp(S - mu[..., None])
    ecross = torch.where(gsum[..., None] > 0, torch.exp(sigma[..., None] - mu), torch.zeros_like(mu))
    Z = E.sum(-1) + ecross * gsum[..., None]
    Dm = E / Z[..., None]
    z = ecross / Z
    h = G @ vbar
    X = Dm @ vb + z[..., None] * h[:, :, None, :]
    rhs = torch.cat([X, z[..., None]], -1)
    M = torch.eye(b, device=q.device, dtype=dtype) - gamma * Dm
    PW = torch.linalg.solve_triangular(M, rhs, upper=False)
    P, w = PW[..., :dv], PW[..., dv]
    valid = (torch.arange(m * b, device=q.device) < n).view(m, b).to(dtype)
    pbar = (P * valid[None, :, :, None]).sum(2) / cnt[:, None]
    c = (w * valid[None]).sum(2) / cnt
    R = torch.eye(m, device=q.device, dtype=dtype) - gamma * c[..., None] * G
    u = torch.linalg.solve_triangular(R, pbar, upper=False)
    s = G @ u
    Y = (1 - gamma) * (P + gamma * w[..., None] * s[:, :, None, :])
    return Y.reshape(bh, m * b, dv)[:, :n]


def sdpa_only(ns):
    """One SDPA hop, causal and non-causal, d = 64 and 128: the speed bars' baselines."""
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, B=1 H={H} bf16")
    print("|      n | SDPA causal d=64 ms | non-causal d=64 ms | causal d=128 ms | non-causal d=128 ms |")
    print("|-------:|--------:|--------:|--------:|--------:|")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for n in ns:
        t = []
        for d in (64, 128):
            q, k, v = (torch.randn(1, H, n, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
            t += [timeit(lambda: sdpa(q, k, v, is_causal=True)), timeit(lambda: sdpa(q, k, v))]
        print(f"| {n:6} | {t[0]:8.3f} | {t[1]:8.3f} | {t[2]:8.3f} | {t[3]:8.3f} |")


def main(argv):
    if "--sdpa" in argv:
        return sdpa_only([int(a) for a in argv[1:] if a != "--sdpa"])
    dump = None
    if "--dump" in argv:
        i = argv.index("--dump")
        dump = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    fixed = None
    if "--block" in argv:
        i = argv.index("--block")
        fixed = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    ns = [int(a) for a in argv[1:]] or [4096, 16384, 32768, 65536]
    torch.manual_seed(0)
    # Self-check: blockwise with b ≥ n is the exact operator.
    q0, k0, v0 = (torch.randn(2, 200, 32, device=dev, dtype=torch.float64) for _ in range(3))
    e = (blockwise(q0, k0, v0, GAMMA, 256, torch.float64)
         - chacal_exact(q0.float(), k0.float(), v0.float(), GAMMA).double()).norm()
    print(f"self-check blockwise(b>=n) vs exact: {e.item():.2e}")
    src = torch.randn(1 << 28, device=dev)
    dst = torch.empty_like(src)
    t = timeit(lambda: dst.copy_(src))
    print(f"torch d2d copy: {2 * src.numel() * 4 / (t * 1e-3) / 1e9:.0f} GB/s (read+write)")
    del src, dst
    if dump:
        n = ns[0]
        rd = lambda nm: torch.from_numpy(np.fromfile(f"{dump}/{nm}_{n}.bf16", dtype=np.uint16).astype(np.int16)).view(torch.bfloat16).to(dev).view(H, n, D)
        q, k, v, y = (rd(x) for x in "qkvy")
        ref = blockwise(q, k, v, GAMMA, auto_block_size(n), torch.float64)
        err = ((y.double() - ref).norm() / ref.norm()).item()
        print(f"cross-check blockres (bf16) vs PyTorch blockwise (f64), n={n}: rel err {err:.2e}")
    rows = []
    for n in ns:
        q, k, v = (torch.randn(1, H, n, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
        sdpa = timeit(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
        b = auto_block_size(n)
        qf, kf, vf = q[0], k[0], v[0]
        try:
            bw = timeit(lambda: blockwise(qf, kf, vf, GAMMA, b), reps=10)
        except torch.OutOfMemoryError:
            bw = float("nan")
        bwf = float("nan")
        if fixed:
            try:
                bwf = timeit(lambda: blockwise(qf, kf, vf, GAMMA, min(fixed, n)), reps=10)
            except torch.OutOfMemoryError:
                pass
        torch.cuda.empty_cache()
        try:
            ex = timeit(lambda: chacal_exact(qf, kf, vf, GAMMA), reps=5, warm=1)
            ex_s = f"{ex:.2f}"
        except torch.OutOfMemoryError:
            ex_s = "OOM"
        torch.cuda.empty_cache()
        rows.append(f"| {n:6} | {sdpa:8.3f} | {bw:8.3f} (b={b}) | {bwf:8.3f} (b={fixed}) | {ex_s:>8} |")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print("|      n | SDPA ms | torch blockwise ms (f32, auto b) | torch blockwise ms (f32, --block) | torch exact ChaCAL ms |")
    print("|-------:|--------:|---------:|---------:|---------:|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main(sys.argv)
