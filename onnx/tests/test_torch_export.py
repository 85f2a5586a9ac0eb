"""The PyTorch module of `blockres_onnx`: eager reference against the numpy float64
reference, and export to one `blockres::ResolventAttention` node that runs in
onnxruntime with the library. Needs torch (≥ 2.8, for `torch.onnx.ops`); the CI machine
has none and skips this file, the GPU machine runs it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import blockres_onnx as br  # noqa: E402
from test_op import reference, rel_err, rng_for  # noqa: E402


def inputs(salt, b=1, h=4, hkv=2, n=70, dk=16, dv=8):
    rng = rng_for(1000 + salt)
    q = torch.from_numpy(rng.standard_normal((b, h, n, dk)).astype(np.float32))
    k = torch.from_numpy(rng.standard_normal((b, hkv, n, dk)).astype(np.float32))
    v = torch.from_numpy(rng.standard_normal((b, hkv, n, dv)).astype(np.float32))
    return q, k, v


@pytest.mark.parametrize(
    "attrs",
    [
        dict(structure="block", block_size=16, gamma=0.5),
        dict(structure="block", block_size=16, gamma=0.9, coarse_query="first"),
        dict(structure="block", block_size=9, gamma=0.8, causal=0),
        dict(structure="dense", gamma=0.3),
        dict(structure="strided", stride=6),
        dict(structure="fixed", stride=8, summary=2),
        dict(structure="topk", alpha=1.5, c_exp=0.5),
    ],
)
def test_eager_matches_numpy_reference(attrs):
    q, k, v = inputs(0)
    y = br.ResolventAttention(**attrs)(q, k, v)
    assert y.dtype == torch.float32 and y.shape == (1, 4, 70, 8)
    ref = reference(q.numpy(), k.numpy(), v.numpy(), **attrs)
    assert rel_err(y.numpy(), ref) <= 1e-6


@pytest.mark.parametrize(
    "attrs",
    [dict(structure="block", block_size=16, gamma=0.5), dict(structure="dense", gamma=0.9, causal=0)],
)
def test_export_runs_in_onnxruntime(attrs, tmp_path):
    import onnx

    module = br.ResolventAttention(**attrs)
    q, k, v = inputs(1)
    eager = module(q, k, v).numpy()
    program = torch.onnx.export(module, (q, k, v), dynamo=True, input_names=["Q", "K", "V"], output_names=["Y"])
    model = program.model_proto
    nodes = [n for n in model.graph.node if n.domain == br.DOMAIN]
    assert [n.op_type for n in nodes] == [br.OP_TYPE]
    got = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    for name, value in attrs.items():
        want = value.encode() if isinstance(value, str) else value
        assert got[name] == pytest.approx(want) if isinstance(value, float) else got[name] == want
    assert any(o.domain == br.DOMAIN and o.version == 1 for o in model.opset_import)
    path = tmp_path / "ra.onnx"
    onnx.save(model, str(path))
    sess = br.session(model)
    feeds = dict(zip([i.name for i in sess.get_inputs()], (q.numpy(), k.numpy(), v.numpy())))
    (y,) = sess.run(None, feeds)
    ref = reference(q.numpy(), k.numpy(), v.numpy(), **attrs)
    assert rel_err(y, ref) <= 1e-5
    assert rel_err(y, eager.astype(np.float64)) <= 1e-5


def test_module_rejects_unknown_attribute():
    with pytest.raises(ValueError, match="unknown attributes"):
        br.ResolventAttention(gama=0.5)
