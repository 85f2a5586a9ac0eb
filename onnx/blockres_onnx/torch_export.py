"""PyTorch side: an eager reference of the operator that exports to ONNX as
``blockres::ResolventAttention`` (requires torch ≥ 2.8 for ``torch.onnx.ops``).

Example::

    import torch, blockres_onnx as br
    m = br.ResolventAttention(gamma=0.5, structure="block", block_size=32)
    q = torch.randn(1, 4, 128, 16)
    y = m(q, q, q)                                  # eager reference
    torch.onnx.export(m, (q, q, q), "ra.onnx", dynamo=True,
                      input_names=["Q", "K", "V"], output_names=["Y"])
"""

from __future__ import annotations

import math

import torch

from . import ATTRIBUTES, DOMAIN, OP_TYPE, OPSET_VERSION, STRUCTURES, auto_block_size, topk_window


def _attention_matrix(q, k, *, scale, causal, structure, block_size, stride, summary, alpha, c_exp, coarse_query="mean"):
    """Dense float64 A (…, n, n) for one structure; O(n²) memory (a reference)."""
    n = q.shape[-2]
    logits = scale * (q @ k.transpose(-1, -2))
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    allowed = (j <= i) if causal else torch.ones(n, n, dtype=torch.bool)
    if structure == "dense":
        return torch.softmax(logits.masked_fill(~allowed, -math.inf), dim=-1)
    if structure == "block":
        b = block_size or auto_block_size(n, max(q.shape[-1], k.shape[-1]))
        m = -(-n // b)
        blk = torch.arange(n) // b
        counts = torch.bincount(blk, minlength=m).to(q.dtype)
        onehot = torch.nn.functional.one_hot(blk, m).to(q.dtype)  # n×m
        if coarse_query == "first":
            qm = q[..., torch.arange(m) * b, :]
        elif coarse_query == "mean":
            qm = (onehot.T @ q) / counts[:, None]
        else:
            raise ValueError(f"attribute coarse_query: expected 'mean' or 'first', got {coarse_query!r}")
        km = (onehot.T @ k) / counts[:, None]
        coarse = scale * (qm @ km.transpose(-1, -2))  # m×m
        same = blk.view(n, 1) == blk.view(1, n)
        bi, bj = blk.view(n, 1), blk.view(1, n)
        other_ok = (bj < bi) if causal else (bj != bi)
        expanded = coarse[..., blk, :][..., :, blk]  # L_{I(i), J(j)}
        full = torch.where(same, logits, expanded)
        ok = (same & allowed) | other_ok
        return torch.softmax(full.masked_fill(~ok, -math.inf), dim=-1)
    if not causal:
        raise ValueError(f"structure {structure!r} is defined for causal attention only")
    if structure == "strided":
        l = stride or math.ceil(math.sqrt(n))
        ok = allowed & (((i - j) < l) | (((i - j) % l) == 0))
    elif structure == "fixed":
        l = stride or math.ceil(math.sqrt(n))
        ok = allowed & (((j // l) == (i // l)) | ((j % l) >= l - (summary or 1)))
    elif structure == "topk":
        kk = topk_window(n, alpha, c_exp)
        masked = logits.masked_fill(~allowed, -math.inf)
        # Stable sort: among equal logits the lower j comes first.
        order = torch.sort(-masked, dim=-1, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(-1, order, torch.arange(n).expand_as(order).contiguous())
        ok = allowed & (rank < torch.clamp(i + 1, max=kk))
    else:
        raise ValueError(f"structure {structure!r}: expected one of {', '.join(STRUCTURES)}")
    return torch.softmax(logits.masked_fill(~ok, -math.inf), dim=-1)


def resolvent_attention_reference(q, k, v, **attrs):
    """Eager ``Y = (1-γ)·(I-γA)⁻¹·A·V`` in float64, returned in ``q``'s dtype."""
    p = dict(ATTRIBUTES)
    p.update({a: x for a, x in attrs.items() if x is not None})
    gamma = float(p["gamma"])
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"attribute gamma: must lie in [0, 1), got {gamma}")
    h, hkv = q.shape[1], k.shape[1]
    if h % hkv:
        raise ValueError(f"input K: head count Hkv={hkv} must divide the query heads H={h}")
    q64, k64, v64 = (t.to(torch.float64) for t in (q, k, v))
    k64 = k64.repeat_interleave(h // hkv, dim=1)
    v64 = v64.repeat_interleave(h // hkv, dim=1)
    scale = float(p["scale"]) or 1.0 / math.sqrt(q.shape[-1])
    a = _attention_matrix(
        q64,
        k64,
        scale=scale,
        causal=bool(p["causal"]),
        structure=p["structure"],
        block_size=int(p["block_size"]),
        stride=int(p["stride"]),
        summary=int(p["summary"]),
        alpha=float(p["alpha"]),
        c_exp=float(p["c_exp"]),
        coarse_query=str(p.get("coarse_query", "mean")),
    )
    n = q.shape[-2]
    eye = torch.eye(n, dtype=torch.float64)
    w = torch.linalg.solve(eye - gamma * a, a @ v64)
    return ((1.0 - gamma) * w).to(q.dtype)


class ResolventAttention(torch.nn.Module):
    """Resolvent attention as a module; under ``torch.onnx.export(..., dynamo=True)``
    one ``blockres::ResolventAttention`` node carrying the module's attributes.

    Eager: causal ``dense`` and ``block`` run the trainable path of ``torch_ops``
    (the input's dtype and device, autograd, never n×n for ``block``); the other
    structures, and bidirectional attention, the float64 reference.
    """

    def __init__(self, **attrs):
        super().__init__()
        unknown = set(attrs) - set(ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}; the op has {', '.join(ATTRIBUTES)}")
        self.attrs = {a: x for a, x in attrs.items() if x is not None}

    def onnx_attributes(self) -> dict:
        out = {}
        for name, value in self.attrs.items():
            default = ATTRIBUTES[name]
            out[name] = type(default)(value)
        return out

    def forward(self, q, k, v):
        if torch.onnx.is_in_onnx_export():
            shape = (q.shape[0], q.shape[1], q.shape[2], v.shape[3])
            return torch.onnx.ops.symbolic(
                f"{DOMAIN}::{OP_TYPE}",
                (q, k, v),
                self.onnx_attributes(),
                dtype=q.dtype,
                shape=shape,
                version=OPSET_VERSION,
            )
        p = dict(ATTRIBUTES)
        p.update(self.attrs)
        if int(p["causal"]) and p["structure"] in ("dense", "block"):
            from .torch_ops import resolvent_attention

            if not 0.0 <= float(p["gamma"]) < 1.0:
                raise ValueError(f"attribute gamma: must lie in [0, 1), got {p['gamma']}")
            return resolvent_attention(
                q, k, v, float(p["gamma"]), structure=p["structure"], block_size=int(p["block_size"]),
                scale=float(p["scale"]), coarse_query=str(p["coarse_query"]),
            )
        return resolvent_attention_reference(q, k, v, **self.attrs)
