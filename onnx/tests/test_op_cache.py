"""blockres.ResolventAttentionWithCache (SPEC §6): every split of a sequence into a
prefill and steps gives the rows of one full call, with the state fed back as new
tensors or shared in place through IOBinding; bad state is an error naming the input.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import blockres_onnx as br
from blockres_onnx.cache import Cache, make_cache_model
from test_op import SEED, reference, rel_err, rng_for

CASES = [  # (structure, block_size, B, H, Hkv, dk, dv, n, gamma)
    ("dense", 0, 1, 1, 1, 8, 8, 1, 0.5),
    ("dense", 0, 2, 4, 2, 8, 12, 37, 0.8),
    ("block", 4, 2, 4, 2, 8, 12, 37, 0.8),
    ("block", 7, 1, 3, 1, 16, 8, 50, 0.95),
    ("block", 16, 1, 2, 2, 8, 8, 40, 0.5),
    ("block", 1, 1, 1, 1, 4, 4, 9, 0.9),
]

_SESS = {}


def sess_for(dtype="float32", **attrs):
    key = (dtype, tuple(sorted(attrs.items())))
    if key not in _SESS:
        _SESS[key] = br.session(make_cache_model(dtype, **attrs))
    return _SESS[key]


def inputs(rng, b, h, hkv, dk, dv, n):
    return (
        rng.standard_normal((b, h, n, dk)).astype(np.float32),
        rng.standard_normal((b, hkv, n, dk)).astype(np.float32),
        rng.standard_normal((b, hkv, n, dv)).astype(np.float32),
    )


def splits(n, rng):
    random, t = [], 0
    while t < n:
        t = min(n, t + int(rng.integers(1, 12)))
        random.append(t)
    return [[n], [n // 3] + list(range(n // 3 + 1, n + 1)), list(range(1, n + 1)), random]


def run_fed_back(sess, q, k, v, cuts, structure, dv):
    """Each call gets the previous call's present outputs as new past inputs."""
    b, h, n, _ = q.shape
    state, out, lo = {}, [], 0
    for hi in cuts:
        if hi <= lo:
            continue
        feed = {"query": q[:, :, lo:hi], "key": k[:, :, lo:hi], "value": v[:, :, lo:hi]}
        feed["past_sequence_length"] = np.array([lo], np.int64)
        names = ["key", "value"] + (["block_key", "block_value", "coarse"] if structure == "block" else [])
        for name in names:
            if name in state:
                feed["past_" + name] = state[name]
            elif name == "coarse":
                feed["past_coarse"] = np.zeros((b, h, dv + 3), np.float32)
            else:
                heads = k.shape[1] if name.endswith("key") else h
                width = k.shape[3] if name.endswith("key") else dv
                feed["past_" + name] = np.zeros((b, heads, 0, width), np.float32)
        res = sess.run(None, feed)
        out.append(res[0])
        state = dict(zip(names, res[1:]))
        lo = hi
    return np.concatenate(out, axis=2)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-b{c[1]}-n{c[7]}")
def test_every_split_equals_one_call(case):
    structure, bs, b, h, hkv, dk, dv, n, gamma = case
    rng = rng_for(hash(case) % 1000)
    q, k, v = inputs(rng, b, h, hkv, dk, dv, n)
    attrs = dict(gamma=gamma, structure=structure)
    if structure == "block":
        attrs.update(block_size=bs, coarse_query="first")
    want = reference(q, k, v, **attrs)
    full = br.session(**attrs).run(None, {"Q": q, "K": k, "V": v})[0]
    sess = sess_for(**attrs)
    for i, cuts in enumerate(splits(n, rng)):
        got = run_fed_back(sess, q, k, v, cuts, structure, dv)
        assert rel_err(got, want) <= 1e-5 and rel_err(got, full) <= 1e-5, (i, cuts, SEED)
        # Shared buffers: the op writes in place, nothing is copied between calls.
        cache = Cache(b, h, hkv, dk, dv, capacity=n + 3, block_size=bs)
        ptrs = {name: val.data_ptr() for name, val in cache.values.items()}
        parts, lo = [], 0
        for hi in cuts:
            if hi <= lo:
                continue
            parts.append(cache.run(sess, q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi]))
            lo = hi
        got = np.concatenate(parts, axis=2)
        assert rel_err(got, want) <= 1e-5, (i, cuts, SEED)
        assert {name: val.data_ptr() for name, val in cache.values.items()} == ptrs
        # The shared key buffer holds the keys (in place, not a copy elsewhere).
        np.testing.assert_array_equal(cache.arrays["key"][:, :, :n], k)


def test_half_precision():
    rng = rng_for(7)
    q, k, v = inputs(rng, 1, 2, 1, 16, 8, 30)
    attrs = dict(gamma=0.8, structure="block", block_size=8, coarse_query="first")
    q16, k16, v16 = (x.astype(np.float16) for x in (q, k, v))
    want = reference(q16, k16, v16, **attrs)
    sess = sess_for("float16", **attrs)
    cache = Cache(1, 2, 1, 16, 8, capacity=30, block_size=8)
    parts = [cache.run(sess, q16[:, :, :11], k16[:, :, :11], v16[:, :, :11])]
    for t in range(11, 30):
        parts.append(cache.run(sess, q16[:, :, t : t + 1], k16[:, :, t : t + 1], v16[:, :, t : t + 1]))
    got = np.concatenate(parts, axis=2)
    assert got.dtype == np.float16
    assert rel_err(got, want) <= 2e-3


@pytest.mark.parametrize(
    "attrs, word",
    [
        (dict(structure="block", block_size=8, coarse_query="mean"), "coarse_query"),
        (dict(structure="block", block_size=0, coarse_query="first"), "block_size"),
        (dict(structure="dense", causal=0), "causal"),
        (dict(structure="strided"), "structure"),
    ],
)
def test_undecodable_attributes_fail_at_session_creation(attrs, word):
    with pytest.raises(Exception, match=word):
        br.session(make_cache_model(**attrs))


def test_bad_state_is_an_error_naming_the_input():
    rng = rng_for(11)
    attrs = dict(gamma=0.7, structure="block", block_size=4)
    sess = sess_for(**attrs)
    q, k, v = inputs(rng, 1, 2, 1, 8, 8, 10)
    cache = Cache(1, 2, 1, 8, 8, capacity=10, block_size=4)
    cache.run(sess, q[:, :, :6], k[:, :, :6], v[:, :, :6])
    a = cache.arrays
    base = {
        "query": q[:, :, 6:7],
        "key": k[:, :, 6:7],
        "value": v[:, :, 6:7],
        "past_sequence_length": np.array([6], np.int64),
        "past_key": a["key"],
        "past_value": a["value"],
        "past_block_key": a["block_key"],
        "past_block_value": a["block_value"],
        "past_coarse": a["coarse"],
    }
    bad = [
        ({"past_sequence_length": np.array([11], np.int64)}, "past_key"),
        ({"past_sequence_length": np.array([-1], np.int64)}, "past_sequence_length"),
        ({"past_value": a["value"][:, :1]}, "past_value"),
        ({"past_key": a["key"][..., :4]}, "past_key"),
        ({"past_sequence_length": np.array([9], np.int64)}, "past_coarse"),  # block 2, state of block 1
        ({"past_block_key": a["block_key"][:, :, :0]}, "past_block_key"),
        ({"key": np.full_like(k[:, :, 6:7], np.nan)}, "key"),
    ]
    for change, word in bad:
        with pytest.raises(Exception, match=word):
            sess.run(None, {**base, **change})
    missing = dict(base)
    del missing["past_coarse"]
    with pytest.raises(Exception, match="past_coarse"):
        sess.run(None, missing)
    # The state is intact after the failures: the step still gives the right row.
    want = reference(q[:, :, :7], k[:, :, :7], v[:, :, :7], coarse_query="first", **attrs)
    y = sess.run(None, base)[0]
    assert rel_err(y, want[:, :, 6:7]) <= 1e-5


OLD_ORT = """
import json, sys
import numpy as np
sys.path.insert(0, {onnx_dir!r})
import onnxruntime as ort
import blockres_onnx as br
from blockres_onnx.cache import Cache, make_cache_model
rng = np.random.default_rng({seed})
q, k, v = (rng.standard_normal((1, 2, 20, 8)).astype(np.float32) for _ in range(3))
sess = br.session(make_cache_model(gamma=0.8, structure="block", block_size=4))
cache = Cache(1, 2, 2, 8, 8, capacity=20, block_size=4)
ptrs = [x.data_ptr() for x in cache.values.values()]
ys = [cache.run(sess, q[:, :, :7], k[:, :, :7], v[:, :, :7])]
ys += [cache.run(sess, q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1]) for t in range(7, 20)]
same = ptrs == [x.data_ptr() for x in cache.values.values()]
in_place = bool(np.array_equal(cache.arrays["key"], k))
print(json.dumps(dict(version=ort.__version__, y=np.concatenate(ys, 2).tolist(), x=[q.tolist(), k.tolist(), v.tolist()], same=same, in_place=in_place)))
"""


def test_shared_buffers_in_onnxruntime_1_20():
    """The oldest onnxruntime the tests carry also hands the op the bound buffer: the
    state is written in place there too."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from test_op import ROOT, VENV

    target = VENV / "ort-1.20"
    assert target.is_dir(), f"{target} is missing: scripts/setup.sh installs it"
    env = dict(os.environ, PYTHONPATH=str(target))
    script = OLD_ORT.format(onnx_dir=str(ROOT / "onnx"), seed=SEED)
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["version"] == "1.20.1"
    assert out["same"] and out["in_place"], out
    q, k, v = (np.array(a, np.float32) for a in out["x"])
    want = reference(q, k, v, gamma=0.8, structure="block", block_size=4, coarse_query="first")
    assert rel_err(np.array(out["y"]), want) <= 1e-5
