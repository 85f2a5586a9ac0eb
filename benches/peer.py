"""numpy/scipy peer of blockres: resolvent attention Y = (1-γ)·A·(I-γA)⁻¹·V.

Written the way a competent Python user would write it, so the benchmark compares
blockres with a fair, vectorized baseline rather than a strawman:

- ``dense``: the exact operator (SPEC §1): the full n×n softmax, then one triangular
  solve (causal) or LU solve (bidirectional) through LAPACK.
- ``block``: the block-structured operator (SPEC §2) by the Woodbury/Schur reduction:
  batched block products (stacked ``matmul``), one LAPACK triangular solve per block,
  and an m×m reduced system. It never forms an n×n matrix.

Arrays are single heads ``q: [n, dk]``, ``k: [n, dk]``, ``v: [n, dv]`` (``resolvent``
walks ``[B, H, n, d]`` tensors with grouped-query heads). Arithmetic stays in the
inputs' dtype, as numpy does.

Run as a script to time both on inputs saved by the Rust driver::

    cargo run --release --example bench_head -- --n 4096 --save /tmp/x
    python benches/peer.py /tmp/x --structure both --reps 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import scipy.linalg as sla

# Upper bound on the elements of one stacked batch of b×b block matrices; bounds the
# working memory at long n without giving up batched BLAS calls.
_BATCH_ELEMS = 1 << 22


def _scale(scale, dk):
    return 1.0 / np.sqrt(dk) if not scale else scale


def dense(q, k, v, gamma=0.5, causal=True, scale=None):
    """Exact resolvent attention of one head (SPEC §1)."""
    n = q.shape[0]
    dt = np.result_type(q, k, v)
    a = q @ k.T
    a *= dt.type(_scale(scale, q.shape[1]))
    if causal:
        idx = np.arange(n)
        a[idx[:, None] < idx[None, :]] = -np.inf
    a -= a.max(axis=1, keepdims=True)
    np.exp(a, out=a)
    a /= a.sum(axis=1, keepdims=True)
    x = a @ v
    # Reuse A's memory for I − γA: at n = 16384 one n×n f32 matrix is already 1 GiB.
    a *= dt.type(-gamma)
    a.flat[:: n + 1] += 1
    if causal:
        w = sla.solve_triangular(a, x, lower=True, check_finite=False)
    else:
        w = np.linalg.solve(a, x)
    w *= dt.type(1.0 - gamma)
    return w


def _block_means(x, b):
    n = x.shape[0]
    nf = n // b
    means = x[: nf * b].reshape(nf, b, -1).mean(axis=1)
    if nf * b < n:
        means = np.vstack([means, x[nf * b :].mean(axis=0, keepdims=True)])
    return means


def _local(qs, ks, vs, sig, has, gsum, hrow, gamma, causal, scale):
    """Local part of stacked equal-size blocks: returns P (c×b×dv) and w (c×b).

    sig/has/gsum/hrow are the blocks' coarse shift σ_I, whether they see any other
    block, Σ_J G̃_IJ, and G̃_I·v̄.
    """
    c, b, dv = vs.shape
    dt = qs.dtype
    s = qs @ ks.transpose(0, 2, 1)
    s *= scale
    if causal:
        s[:, ~np.tri(b, dtype=bool)] = -np.inf
    # A block that sees no other block is shifted by its local maximum alone.
    mu = np.maximum(s.max(axis=2), np.where(has, sig, -np.inf)[:, None])
    s -= mu[:, :, None]
    np.exp(s, out=s)
    ecross = np.where(has[:, None], np.exp(sig[:, None] - mu), 0).astype(dt)
    zsum = s.sum(axis=2) + ecross * gsum[:, None]
    s /= zsum[:, :, None]
    z = ecross / zsum
    rhs = np.empty((c, b, dv + 1), dt)
    np.matmul(s, vs, out=rhs[:, :, :dv])
    rhs[:, :, :dv] += z[:, :, None] * hrow[:, None, :]
    rhs[:, :, dv] = z
    # M_I = I − γ·D_I, built in place over D.
    s *= dt.type(-gamma)
    s[:, np.arange(b), np.arange(b)] += 1
    if causal:
        for i in range(c):
            rhs[i] = sla.solve_triangular(s[i], rhs[i], lower=True, check_finite=False)
    else:
        rhs = np.linalg.solve(s, rhs)
    return rhs[:, :, :dv], rhs[:, :, dv]


def block(q, k, v, b, gamma=0.5, causal=True, scale=None):
    """Block-structured resolvent attention of one head (SPEC §2), block size b."""
    n, dk = q.shape
    dv = v.shape[1]
    dt = np.result_type(q, k, v)
    sc = dt.type(_scale(scale, dk))
    b = min(max(int(b), 1), n)
    m = -(-n // b)
    nf = n // b
    sizes = np.full(m, b)
    sizes[-1] = n - (m - 1) * b

    # Coarse logits with ln n_J folded in, shifted per block row (σ_I) so that no
    # exponential overflows; rows that see no other block get G̃ = 0.
    qb, kb, vb = _block_means(q, b), _block_means(k, b), _block_means(v, b)
    logits = (qb @ kb.T) * sc + np.log(sizes).astype(dt)[None, :]
    allowed = np.tri(m, k=-1, dtype=bool) if causal else ~np.eye(m, dtype=bool)
    logits[~allowed] = -np.inf
    sig = logits.max(axis=1)
    has = np.isfinite(sig)
    sig = np.where(has, sig, 0).astype(dt)
    g = np.exp(logits - sig[:, None])
    gsum = g.sum(axis=1)
    hm = g @ vb

    y = np.empty((n, dv), dt)
    w = np.empty(n, dt)
    chunk = max(1, _BATCH_ELEMS // (b * b))
    for j0 in range(0, nf, chunk):
        j1 = min(j0 + chunk, nf)
        r0, r1 = j0 * b, j1 * b
        p, wj = _local(
            q[r0:r1].reshape(-1, b, dk),
            k[r0:r1].reshape(-1, b, dk),
            v[r0:r1].reshape(-1, b, dv),
            sig[j0:j1],
            has[j0:j1],
            gsum[j0:j1],
            hm[j0:j1],
            gamma,
            causal,
            sc,
        )
        y[r0:r1] = p.reshape(-1, dv)
        w[r0:r1] = wj.reshape(-1)
    if nf < m:
        r0 = nf * b
        p, wj = _local(
            q[None, r0:],
            k[None, r0:],
            v[None, r0:],
            sig[nf:],
            has[nf:],
            gsum[nf:],
            hm[nf:],
            gamma,
            causal,
            sc,
        )
        y[r0:] = p[0]
        w[r0:] = wj[0]

    # Reduced system (I − γ·diag(c)·G̃)·u = p̄ over the block means of P and w.
    pbar = _block_means(y, b)
    cvec = _block_means(w[:, None], b)[:, 0]
    r = g * (-gamma * cvec)[:, None]
    r.flat[:: m + 1] += 1
    if causal:
        u = sla.solve_triangular(r, pbar, lower=True, check_finite=False)
    else:
        u = np.linalg.solve(r, pbar)
    s = np.repeat(g @ u, sizes, axis=0)
    y += dt.type(gamma) * w[:, None] * s
    y *= dt.type(1.0 - gamma)
    return y


def resolvent(q, k, v, gamma=0.5, causal=True, scale=None, structure="block", b=0):
    """Both operators over ``[B, H, n, dk]`` / ``[B, Hkv, n, d]`` tensors (SPEC §4)."""
    bsz, h = q.shape[:2]
    hkv = k.shape[1]
    group = h // hkv
    out = np.empty(q.shape[:3] + (v.shape[3],), np.result_type(q, k, v))
    for i in range(bsz):
        for j in range(h):
            args = (q[i, j], k[i, j // group], v[i, j // group])
            if structure == "dense":
                out[i, j] = dense(*args, gamma=gamma, causal=causal, scale=scale)
            else:
                out[i, j] = block(*args, b, gamma=gamma, causal=causal, scale=scale)
    return out


def _rel(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(float).tiny))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", help="folder with q.npy, k.npy, v.npy (and meta.json)")
    ap.add_argument("--structure", choices=["dense", "block", "both"], default="both")
    ap.add_argument("--b", type=int, default=0, help="block size (default: meta.json)")
    ap.add_argument("--gamma", type=float, default=None)
    ap.add_argument("--bidirectional", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args(argv)
    meta = {}
    if os.path.exists(os.path.join(a.dir, "meta.json")):
        with open(os.path.join(a.dir, "meta.json")) as f:
            meta = json.load(f)
    q, k, v = (np.load(os.path.join(a.dir, f"{x}.npy")) for x in "qkv")
    gamma = a.gamma if a.gamma is not None else meta.get("gamma", 0.5)
    causal = not a.bidirectional and meta.get("causal", True)
    b = a.b or meta.get("b", 0)
    kinds = ["dense", "block"] if a.structure == "both" else [a.structure]
    if "block" in kinds and b <= 0:
        ap.error("block needs --b (or a meta.json from bench_head)")
    for kind in kinds:
        def call():
            return resolvent(q, k, v, gamma, causal, structure=kind, b=b)

        for _ in range(a.warmup):
            call()
        times = []
        for _ in range(max(1, a.reps)):
            t0 = time.perf_counter()
            y = call()
            times.append(time.perf_counter() - t0)
        ref = os.path.join(a.dir, f"y_{kind}.npy")
        rel = _rel(y, np.load(ref)) if os.path.exists(ref) else None
        rec = {
            "impl": "numpy",
            "n": q.shape[2],
            "heads": q.shape[1],
            "structure": kind,
            "b": b if kind == "block" else q.shape[2],
            "dtype": str(q.dtype),
            "causal": causal,
            "gamma": gamma,
            "reps": len(times),
            "seconds": float(np.median(times)),
            "min_seconds": float(min(times)),
            "rel_diff_vs_blockres": rel,
        }
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
