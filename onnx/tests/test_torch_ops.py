"""The trainable PyTorch op (blockres_onnx.torch_ops) against the Rust op in onnxruntime
(float32, ≤ 1e-5 relative) and against the float64 reference, on fresh random inputs:
odd n, n = 1, dk ≠ dv, GQA, both coarse queries, per-head γ; gradients by gradcheck.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("BLOCKRES_REQUIRE_TORCH"):
    import torch
else:
    torch = pytest.importorskip("torch")

from blockres_onnx.torch_ops import resolvent_attention  # noqa: E402
from test_op import reference, rel_err, rng_for, run  # noqa: E402

CASES = [
    # (B, H, Hkv, n, dk, dv, structure, b, coarse, γ)
    (1, 4, 2, 70, 16, 8, "block", 16, "mean", 0.5),
    (2, 2, 2, 70, 16, 8, "block", 16, "first", 0.9),
    (1, 4, 1, 129, 12, 20, "block", 8, "first", 0.95),
    (1, 2, 2, 1, 8, 8, "block", 16, "first", 0.5),
    (1, 2, 2, 37, 8, 8, "block", 1, "mean", 0.7),
    (1, 3, 3, 33, 8, 5, "block", 64, "first", 0.3),
    (2, 4, 2, 50, 16, 16, "dense", 0, "mean", 0.8),
    (1, 2, 1, 1, 4, 6, "dense", 0, "mean", 0.0),
    (1, 2, 2, 300, 32, 32, "block", 0, "mean", 0.6),
]


def qkv(rng, bsz, h, hkv, n, dk, dv):
    return (
        rng.standard_normal((bsz, h, n, dk)).astype(np.float32),
        rng.standard_normal((bsz, hkv, n, dk)).astype(np.float32),
        rng.standard_normal((bsz, hkv, n, dv)).astype(np.float32),
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_float32_matches_rust_op_and_float64_reference(case):
    bsz, h, hkv, n, dk, dv, structure, b, coarse, gamma = case
    q, k, v = qkv(rng_for(CASES.index(case)), bsz, h, hkv, n, dk, dv)
    attrs = dict(gamma=gamma, structure=structure, causal=1)
    if structure == "block":
        attrs.update(block_size=b, coarse_query=coarse)
    ours = resolvent_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), gamma,
        structure=structure, block_size=b, coarse_query=coarse,
    ).numpy()
    assert ours.shape == (bsz, h, n, dv) and ours.dtype == np.float32
    rust = run(q, k, v, **attrs)
    assert rel_err(ours, rust.astype(np.float64)) <= 1e-5
    ref = reference(q, k, v, **attrs)
    assert rel_err(ours, ref) <= 1e-5
    ours64 = resolvent_attention(
        *(torch.from_numpy(t.astype(np.float64)) for t in (q, k, v)), gamma,
        structure=structure, block_size=b, coarse_query=coarse,
    ).numpy()
    assert rel_err(ours64, ref) <= 1e-12


@pytest.mark.parametrize("structure,coarse", [("block", "first"), ("block", "mean"), ("dense", "mean")])
def test_per_head_gamma_equals_one_node_per_head(structure, coarse):
    gammas = [0.2, 0.6, 0.9, 0.99]
    q, k, v = qkv(rng_for(77), 2, 4, 2, 45, 8, 8)
    y = resolvent_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v), torch.tensor(gammas),
        structure=structure, block_size=8, coarse_query=coarse,
    ).numpy()
    for hi, g in enumerate(gammas):
        attrs = dict(gamma=g, structure=structure)
        if structure == "block":
            attrs.update(block_size=8, coarse_query=coarse)
        rust = run(q[:, hi : hi + 1], k[:, hi // 2 : hi // 2 + 1], v[:, hi // 2 : hi // 2 + 1], **attrs)
        assert rel_err(y[:, hi : hi + 1], rust.astype(np.float64)) <= 1e-5


@pytest.mark.parametrize("structure,coarse", [("block", "first"), ("block", "mean"), ("dense", "mean")])
def test_gradients_match_finite_differences(structure, coarse):
    rng = rng_for(5)
    q, k, v = (torch.from_numpy(rng.standard_normal(s)).requires_grad_() for s in [(1, 2, 11, 3), (1, 1, 11, 3), (1, 1, 11, 2)])
    gamma = torch.tensor([0.4, 0.8], dtype=torch.float64, requires_grad=True)

    def f(q, k, v, gamma):
        return resolvent_attention(q, k, v, gamma, structure=structure, block_size=4, coarse_query=coarse)

    assert torch.autograd.gradcheck(f, (q, k, v, gamma))


def test_bad_arguments_name_what_is_wrong():
    x = torch.zeros(1, 2, 8, 4)
    with pytest.raises(ValueError, match="coarse_query"):
        resolvent_attention(x, x, x, 0.5, block_size=4, coarse_query="middle")
    with pytest.raises(ValueError, match="gamma"):
        resolvent_attention(x, x, x, torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="Hkv"):
        resolvent_attention(torch.zeros(1, 3, 8, 4), x, x, 0.5)
    with pytest.raises(ValueError, match="structure"):
        resolvent_attention(x, x, x, 0.5, structure="strided")
