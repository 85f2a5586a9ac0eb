"""Streaming the shipped tracking models through onnxruntime with
``blockres.ResolventAttentionWithCache`` (onnx/tracking/stream.py): the decode model
rewritten from the shipped file gives the shipped full-sequence model's logits, one token
at a time and split into a prefill and multi-token steps, with the state in shared,
preallocated buffers that never move; the committed decode models are what the builder
makes from the shipped files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from blockres_onnx.tracking import Task, generate
from test_op import SEED

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
import stream  # noqa: E402

MANIFEST = json.loads((stream.MODELS / "manifest.json").read_text())
TASK = Task(**{k: MANIFEST[k] for k in ("boxes", "objects", "p_move", "p_shift", "p_ask")})
N = 100


@pytest.fixture(scope="module", params=["block", "dense"])
def models(request):
    kind = request.param
    built = stream.build_decode_model(kind)
    return kind, built, stream.session(built, 1), stream.session(stream.MODELS / f"tracking_{kind}.onnx", 1)


def _stream(st, tokens, cuts):
    parts, lo = [], 0
    for hi in cuts:
        parts.append(st.run(tokens[:, lo:hi]).copy())
        lo = hi
    assert st.length == tokens.shape[1]
    return np.concatenate(parts, axis=1)


def test_streamed_logits_equal_the_full_model(models):
    kind, _, dsess, full = models
    data = generate(TASK, 2, N, rng=np.random.default_rng(SEED))
    (want,) = full.run(None, {"tokens": data.tokens})
    top = np.abs(want).max()
    rng = np.random.default_rng(SEED + 1)
    p = int(rng.integers(20, 60))
    random, t = [], p
    while t < N:
        t = min(N, t + int(rng.integers(1, 9)))
        random.append(t)
    splits = {
        "token by token": list(range(1, N + 1)),
        f"prefill {p} + steps": [p] + random,
        "prefill 37 + steps of 13": [37] + list(range(50, N, 13)) + [N],
    }
    st = stream.Stream(dsess, 2, N + 5)
    ptrs = st.data_ptrs()
    for name, cuts in splits.items():
        st.reset()
        got = _stream(st, data.tokens, cuts)
        err = np.abs(got - want).max() / top
        assert err <= 1e-4, (kind, name, err, SEED)
        # The state lives in the preallocated buffers: written in place, never moved.
        assert st.data_ptrs() == ptrs, (kind, name)
        assert np.abs(st.arrays[next(iter(st.arrays))][:, :, :N]).max() > 0
    # Each sequence's ASKs answered as they arrive: the same answers as the full model.
    m = data.ask_mask
    top2 = np.sort(want, axis=-1)[..., -2:]
    clear = m & (top2[..., 1] - top2[..., 0] > 1e-3)  # leave out near-ties
    np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


def test_one_call_with_the_full_models_reference_is_bit_exact(models):
    """With R = n − 1 the decode model's positions are the full model's: one call on the
    whole sequence must then be the shipped graph itself (same kernels, same numbers)."""
    kind, _, _, full = models
    data = generate(TASK, 1, N, rng=np.random.default_rng(SEED + 2))
    (want,) = full.run(None, {"tokens": data.tokens})
    sess = stream.session(stream.build_decode_model(kind, reference=N - 1), 1)
    got = stream.Stream(sess, 1, N).run(data.tokens)
    np.testing.assert_array_equal(got, want)


def test_committed_decode_model_is_the_rebuilt_one(models):
    import onnx

    kind, built, _, _ = models
    path = stream.decode_path(kind)
    if not path.exists():
        pytest.skip(f"{path} not built")
    from onnx import helper, numpy_helper

    saved = onnx.load(str(path))

    def nodes(m):
        return [(n.op_type, n.domain, list(n.input), list(n.output),
                 sorted((a.name, str(helper.get_attribute_value(a))) for a in n.attribute)) for n in m.graph.node]

    def io(vs):
        return [(v.name, str(v.type)) for v in vs]

    assert nodes(saved) == nodes(built)
    assert io(saved.graph.input) == io(built.graph.input) and io(saved.graph.output) == io(built.graph.output)
    assert saved.metadata_props == built.metadata_props
    a = {i.name: numpy_helper.to_array(i) for i in saved.graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in built.graph.initializer}
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_capacity_and_batch_are_checked(models):
    _, _, dsess, _ = models
    st = stream.Stream(dsess, 1, 8)
    st.run(np.ones((1, 6), np.int64))
    with pytest.raises(ValueError, match="capacity"):
        st.run(np.ones((1, 3), np.int64))
    with pytest.raises(ValueError, match="batch"):
        st.run(np.ones((2, 1), np.int64))
