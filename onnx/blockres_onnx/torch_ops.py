"""Trainable resolvent attention in PyTorch: batched, differentiable, on any device.

``resolvent_attention(q, k, v, gamma, ...)`` computes the causal operator of SPEC §1
(``structure="dense"``) and §2 (``structure="block"``, both ``coarse_query`` values) in
the input's dtype with autograd. Unlike the float64 reference in ``torch_export`` it
never forms an n×n matrix for ``block``: the block path is the Woodbury/Schur
evaluation of SPEC §2 batched over (batch, head, block) — local b×b triangular solves,
then one m×m unit-triangular reduced solve. ``gamma`` may be a float or a tensor of one
value per query head (a learned, per-head hop discount); an exported node carries one
float, so a model with per-head γ exports one node per head (see ``tracking_model``).

Example::

    import torch
    from blockres_onnx.torch_ops import resolvent_attention
    q = torch.randn(2, 4, 100, 16, requires_grad=True)
    y = resolvent_attention(q, q, q, gamma=torch.tensor([0.5, 0.8, 0.9, 0.95]),
                            structure="block", block_size=16)
    y.sum().backward()
"""

from __future__ import annotations

import math

import torch

_NEG = -math.inf


def _gamma_view(gamma, heads, like):
    """γ as a tensor broadcastable against [B, H, ...] (one value, or one per head)."""
    g = torch.as_tensor(gamma, dtype=like.dtype, device=like.device)
    if g.ndim == 0:
        return g.view(1, 1, 1, 1)
    if g.shape != (heads,):
        raise ValueError(f"gamma: expected a float or a tensor of shape [{heads}], got {tuple(g.shape)}")
    return g.view(1, heads, 1, 1)


def _expand_kv(q, k, v):
    h, hkv = q.shape[1], k.shape[1]
    if h % hkv:
        raise ValueError(f"input K: head count Hkv={hkv} must divide the query heads H={h}")
    if h != hkv:
        k = k.repeat_interleave(h // hkv, dim=1)
        v = v.repeat_interleave(h // hkv, dim=1)
    return k, v


def dense_causal(q, k, v, gamma, scale):
    """SPEC §1, causal: ``W = solve(I − γA, A·V)`` by one triangular solve, O(n²·d)."""
    n = q.shape[-2]
    g = _gamma_view(gamma, q.shape[1], q)
    logits = scale * (q @ k.transpose(-1, -2))
    mask = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    a = torch.softmax(logits.masked_fill(~mask, _NEG), dim=-1)
    eye = torch.eye(n, dtype=q.dtype, device=q.device)
    w = torch.linalg.solve_triangular(eye - g * a, a @ v, upper=False)
    return (1.0 - g) * w


def block_causal(q, k, v, gamma, scale, b, coarse_query="mean"):
    """SPEC §2, causal, by the Woodbury/Schur steps 1–7; never n×n."""
    bsz, h, n, dk = q.shape
    dv = v.shape[-1]
    m = -(-n // b)
    pad = m * b - n
    g = _gamma_view(gamma, h, q).unsqueeze(-1)  # [1|B, H|1, 1, 1, 1]
    if pad:
        q, k, v = (torch.nn.functional.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.view(bsz, h, m, b, dk)
    kb = k.view(bsz, h, m, b, dk)
    vb = v.view(bsz, h, m, b, dv)
    dev, dt = q.device, q.dtype
    pos = torch.arange(m * b, device=dev).view(m, b)
    valid = pos < n  # [m, b]
    counts = valid.sum(-1).to(dt)  # n_J
    vmask = valid.to(dt).view(1, 1, m, b, 1)

    # 1. Block means and coarse logits (masked to J < I), G with ln n_J folded in.
    kbar = (kb * vmask).sum(3) / counts.view(1, 1, m, 1)
    vbar = (vb * vmask).sum(3) / counts.view(1, 1, m, 1)
    if coarse_query == "mean":
        qhat = (qb * vmask).sum(3) / counts.view(1, 1, m, 1)
    elif coarse_query == "first":
        qhat = qb[:, :, :, 0, :]
    else:
        raise ValueError(f"attribute coarse_query: expected 'mean' or 'first', got {coarse_query!r}")
    lower = torch.ones(m, m, dtype=torch.bool, device=dev).tril(-1)  # J < I
    logg = scale * (qhat @ kbar.transpose(-1, -2)) + counts.log().view(1, 1, 1, m)
    logg = logg.masked_fill(~lower, _NEG)
    sigma = logg.amax(-1, keepdim=True)  # σ_I; −inf for block 0
    sigma_safe = torch.where(torch.isfinite(sigma), sigma, torch.zeros_like(sigma))
    gt = torch.exp(logg - sigma_safe)  # G̃, 0 where masked

    # 2. Local logits, row max over local and coarse, Z, D and z̃.
    local = scale * (qb @ kb.transpose(-1, -2))  # [B, H, m, b, b]
    tri = torch.ones(b, b, dtype=torch.bool, device=dev).tril()
    local = local.masked_fill(~tri, _NEG)
    mx = torch.maximum(local.amax(-1), sigma.expand(-1, -1, -1, b))  # [B, H, m, b]
    e = torch.exp(local - mx.unsqueeze(-1))
    cross = torch.exp(sigma - mx)  # exp(σ_I − mx_i); 0 for block 0
    zsum = e.sum(-1) + cross * gt.sum(-1, keepdim=True)
    d = e / zsum.unsqueeze(-1)  # D_I
    zt = cross / zsum  # z̃_i

    # 3.–4. X = D·V + z̃ ⊗ (G̃·v̄); local solves M_I⁻¹ [X_I, z̃_I].
    x = d @ vb + zt.unsqueeze(-1) * (gt @ vbar).unsqueeze(3)
    rhs = torch.cat([x, zt.unsqueeze(-1)], dim=-1)
    eye_b = torch.eye(b, dtype=dt, device=dev)
    sol = torch.linalg.solve_triangular(eye_b - g * d, rhs, upper=False)
    p, w = sol[..., :dv], sol[..., dv]

    # 5.–6. Block means of P and w (valid rows only); R·u = p̄ with R unit lower triangular.
    pbar = (p * vmask).sum(3) / counts.view(1, 1, m, 1)
    c = (w * vmask[..., 0]).sum(3) / counts.view(1, 1, m)
    g2 = g.squeeze(-1)
    r = torch.eye(m, dtype=dt, device=dev) - g2 * c.unsqueeze(-1) * gt
    u = torch.linalg.solve_triangular(r, pbar, upper=False, unitriangular=True)

    # 7. Y_I = (1−γ)·(P_I + γ·w_I ⊗ (G̃·u)_I).
    y = (1.0 - g) * (p + g * w.unsqueeze(-1) * (gt @ u).unsqueeze(3))
    return y.reshape(bsz, h, m * b, dv)[:, :, :n]


def resolvent_attention(q, k, v, gamma=0.5, *, structure="block", block_size=0, scale=0.0, coarse_query="mean"):
    """Causal resolvent attention ``Y = (1−γ)·(I−γA)⁻¹·A·V`` with autograd.

    ``q [B,H,n,dk]``, ``k [B,Hkv,n,dk]``, ``v [B,Hkv,n,dv]`` → ``[B,H,n,dv]``.
    ``block_size = 0`` picks b as the op does (``auto_block_size``).
    """
    from . import auto_block_size

    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("inputs Q, K, V: expected rank 4 [B, H, n, d]")
    k, v = _expand_kv(q, k, v)
    scale = float(scale) or 1.0 / math.sqrt(q.shape[-1])
    if structure == "dense":
        return dense_causal(q, k, v, gamma, scale)
    if structure != "block":
        raise ValueError(f"structure {structure!r}: the trainable path has 'dense' and 'block'")
    n = q.shape[-2]
    b = int(block_size) or auto_block_size(n, max(q.shape[-1], v.shape[-1]))
    if b >= n:
        return dense_causal(q, k, v, gamma, scale)
    return block_causal(q, k, v, gamma, scale, b, coarse_query)
