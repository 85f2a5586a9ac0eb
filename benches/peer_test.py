"""Tests of the numpy peer (benches/peer.py) against a float64 reference written here,
and a cross-check of blockres (through examples/bench_head.rs) against the peer.

The reference is deliberately naive: it materializes the n×n attention matrix (for the
block structure, entry by entry from the definition in SPEC §2) and calls a general
solver, so it shares no code path with either implementation.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import peer  # noqa: E402

EPS32 = np.finfo(np.float32).eps


def softmax_masked(logits, allowed):
    x = np.where(allowed, logits, -np.inf)
    x = x - x.max(axis=1, keepdims=True)
    e = np.where(allowed, np.exp(x), 0.0)
    return e / e.sum(axis=1, keepdims=True)


def ref_dense_matrix(q, k, causal, scale=None):
    n, dk = q.shape
    sc = 1 / np.sqrt(dk) if scale is None else scale
    i = np.arange(n)
    allowed = i[None, :] <= i[:, None] if causal else np.ones((n, n), bool)
    return softmax_masked(sc * (q @ k.T), allowed)


def ref_block_matrix(q, k, b, causal, scale=None):
    """A of SPEC §2 as an n×n matrix: exact logits within a block, the block-mean
    logit for every token of another allowed block."""
    n, dk = q.shape
    sc = 1 / np.sqrt(dk) if scale is None else scale
    blk = np.arange(n) // b
    m = blk[-1] + 1
    qbar = np.array([q[blk == j].mean(axis=0) for j in range(m)])
    kbar = np.array([k[blk == j].mean(axis=0) for j in range(m)])
    local = sc * (q @ k.T)
    coarse = sc * (qbar @ kbar.T)[blk][:, blk]
    same = blk[:, None] == blk[None, :]
    i = np.arange(n)
    if causal:
        allowed = np.where(same, i[None, :] <= i[:, None], blk[None, :] < blk[:, None])
    else:
        allowed = np.ones((n, n), bool)
    return softmax_masked(np.where(same, local, coarse), allowed)


def ref_resolvent(a, v, gamma):
    n = a.shape[0]
    return (1 - gamma) * np.linalg.solve(np.eye(n) - gamma * a, a @ v)


def inputs(n, dk, dv, seed, amp=1.0):
    rng = np.random.default_rng(seed)
    q = amp * rng.standard_normal((n, dk))
    k = amp * rng.standard_normal((n, dk))
    v = rng.standard_normal((n, dv))
    return q, k, v


def rel(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.95])
@pytest.mark.parametrize("n", [1, 2, 97])
def test_dense_matches_reference(n, gamma, causal):
    q, k, v = inputs(n, 12, 5, seed=n * 7 + int(gamma * 100) + causal)
    want = ref_resolvent(ref_dense_matrix(q, k, causal), v, gamma)
    got = peer.dense(q, k, v, gamma, causal)
    assert rel(got, want) < 1e-12
    got32 = peer.dense(*(x.astype(np.float32) for x in (q, k, v)), gamma, causal)
    assert got32.dtype == np.float32
    # Inputs rounded to f32 move y by a few ε·cond; the solve adds ε·n·cond.
    cond = (1 + gamma) / (1 - gamma)
    assert rel(got32, want) < 20 * EPS32 * max(n, 10) * cond


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.95])
@pytest.mark.parametrize("n,b", [(101, 7), (101, 16), (100, 25), (64, 33), (5, 2)])
def test_block_matches_reference(n, b, gamma, causal):
    q, k, v = inputs(n, 10, 6, seed=n + b + int(gamma * 100) + 2 * causal, amp=1.3)
    want = ref_resolvent(ref_block_matrix(q, k, b, causal), v, gamma)
    got = peer.block(q, k, v, b, gamma, causal)
    assert rel(got, want) < 1e-11
    got32 = peer.block(*(x.astype(np.float32) for x in (q, k, v)), b, gamma, causal)
    assert got32.dtype == np.float32
    cond = (1 + gamma) / (1 - gamma)
    assert rel(got32, want) < 20 * EPS32 * n * cond


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("b", [1, 61, 62, 500])
def test_block_exact_cases_equal_dense(b, causal):
    # b = 1 (every block a token: coarse = exact logits) and b ≥ n (one block).
    n = 61
    q, k, v = inputs(n, 8, 8, seed=b + causal)
    want = ref_resolvent(ref_dense_matrix(q, k, causal), v, 0.7)
    assert rel(peer.block(q, k, v, b, 0.7, causal), want) < 1e-11
    assert rel(peer.dense(q, k, v, 0.7, causal), want) < 1e-11


@pytest.mark.parametrize("causal", [True, False])
def test_constant_values_pass_through(causal):
    n = 203
    q, k, _ = inputs(n, 16, 4, seed=3, amp=2.0)
    c = np.array([1.5, -2.0, 0.25, 7.0])
    v = np.tile(c, (n, 1))
    for y in (peer.block(q, k, v, 19, 0.9, causal), peer.dense(q, k, v, 0.9, causal)):
        np.testing.assert_allclose(y, v, rtol=1e-12, atol=1e-12)


def test_block_never_overflows_on_large_logits():
    # Logits of several hundred: any unshifted exponential would overflow.
    n = 150
    q, k, v = inputs(n, 8, 3, seed=11, amp=12.0)
    want = ref_resolvent(ref_block_matrix(q, k, 20, True), v, 0.5)
    got = peer.block(q, k, v, 20, 0.5, True)
    assert np.all(np.isfinite(got))
    assert rel(got, want) < 1e-10


def test_resolvent_grouped_query_heads():
    rng = np.random.default_rng(5)
    n = 45
    q = rng.standard_normal((2, 4, n, 8))
    k = rng.standard_normal((2, 2, n, 8))
    v = rng.standard_normal((2, 2, n, 3))
    y = peer.resolvent(q, k, v, 0.5, True, structure="block", b=10)
    for bi in range(2):
        for h in range(4):
            a = ref_block_matrix(q[bi, h], k[bi, h // 2], 10, True)
            assert rel(y[bi, h], ref_resolvent(a, v[bi, h // 2], 0.5)) < 1e-11


def run_bench_head(args):
    """Runs examples/bench_head.rs; its output, one JSON object per line."""
    # Through cargo, so a changed kernel is rebuilt rather than a stale binary tested
    # (a no-op after scripts/test.sh's `cargo test --release`, which builds examples).
    if shutil.which("cargo"):
        cmd = ["cargo", "run", "--release", "--quiet", "--example", "bench_head", "--"]
    else:
        cmd = [str(ROOT / "target" / "release" / "examples" / "bench_head")]
    out = subprocess.run(
        cmd + args, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "extra",
    [
        ["--n", "777", "--b", "40", "--heads", "2", "--dk", "64", "--dv", "64"],
        ["--n", "301", "--b", "0", "--heads", "1", "--dk", "24", "--dv", "9"],
        ["--n", "257", "--b", "30", "--heads", "1", "--dk", "16", "--dv", "16", "--bidirectional"],
    ],
)
def test_blockres_matches_peer(tmp_path, extra):
    recs = run_bench_head(
        extra + ["--structure", "both", "--reps", "1", "--warmup", "0", "--gamma", "0.8"]
        + ["--save", str(tmp_path)]
    )
    assert [r["structure"] for r in recs] == ["dense", "block"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    q, k, v = (np.load(tmp_path / f"{x}.npy").astype(np.float64) for x in "qkv")
    for kind in ("dense", "block"):
        want = peer.resolvent(q, k, v, meta["gamma"], meta["causal"], structure=kind, b=meta["b"])
        got = np.load(tmp_path / f"y_{kind}.npy")
        assert got.dtype == np.float32 and got.shape == want.shape
        assert rel(got, want) <= 1e-5, kind
    # The driver's own block-vs-dense figure is the same quantity.
    yd, yb = (np.load(tmp_path / f"y_{x}.npy").astype(np.float64) for x in ("dense", "block"))
    assert recs[1]["rel_diff_vs_dense"] == pytest.approx(rel(yb, yd), rel=1e-3, abs=1e-7)


def test_peer_script_reads_saved_inputs(tmp_path):
    run_bench_head(["--n", "200", "--b", "16", "--structure", "both", "--reps", "1",
                    "--warmup", "0", "--save", str(tmp_path)])
    out = subprocess.run(
        [sys.executable, str(HERE / "peer.py"), str(tmp_path), "--reps", "1", "--warmup", "0"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    recs = [json.loads(x) for x in out.stdout.splitlines()]
    assert [r["structure"] for r in recs] == ["dense", "block"]
    assert recs[1]["b"] == 16
    # Both sides are f32 here, so the difference is a few ε·n.
    assert all(r["rel_diff_vs_blockres"] < 1e-4 for r in recs)
