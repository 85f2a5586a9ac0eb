"""The op's GPU path in onnxruntime (a CPU-only onnxruntime is enough: the library copies
in and out itself), against the float64 numpy reference of test_op.py.

Runs only with BLOCKRES_GPU_TESTS=1, on a machine with an NVIDIA GPU, with
BLOCKRES_LIBRARY naming a libblockres.so built with `--features cuda`
(`cuda/ort_gpu_check.sh` does all of it). Needs numpy, onnx, onnxruntime and pytest.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from test_op import expect_error, make_session, random_qkv, reference, rel_err, rng_for, rounded, run

pytestmark = pytest.mark.skipif(
    os.environ.get("BLOCKRES_GPU_TESTS") != "1",
    reason="GPU tests run only with BLOCKRES_GPU_TESTS=1 (on the GPU machine, library built with --features cuda)",
)

#: Largest relative error (max |y - ref| / max |ref|) per element type.
TOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 1e-2}


@pytest.fixture(scope="module", autouse=True)
def gpu_runs():
    """Fail every test, with the reason, when the forced GPU path cannot run at all
    (library without `cuda`, no driver, no device): these tests must not pass on the CPU."""
    rng = rng_for(100)
    q, k, v = random_qkv(rng, 1, 1, 1, 16, 8, 8)
    try:
        run(q, k, v, device="gpu")
    except Exception as e:
        pytest.fail(f"the op's GPU path does not run here: {e}")


CASES = [
    # structure, n, B, H, Hkv, dk, dv, block_size, gamma
    ("block", 1000, 2, 4, 2, 64, 32, 0, 0.5),  # automatic b = 16, 1000 = 62.5·b; GQA 2
    ("block", 4097, 1, 3, 1, 32, 80, 64, 0.9),  # 4097 = 64·64 + 1; GQA 3
    ("block", 1000, 1, 2, 2, 128, 128, 100, 0.3),  # widest heads
    ("dense", 1000, 1, 3, 1, 48, 64, 0, 0.5),
    ("dense", 4097, 1, 2, 2, 64, 16, 0, 0.7),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}-n{}-B{}-h{}/{}-dk{}-dv{}-b{}".format(*c[:8]))
def test_gpu_matches_float64_reference(case, dtype):
    structure, n, bsz, h, hkv, dk, dv, b, gamma = case
    rng = rng_for(300 + CASES.index(case))
    q, k, v = random_qkv(rng, bsz, h, hkv, n, dk, dv)
    attrs = dict(structure=structure, block_size=b, gamma=gamma)
    y = run(q, k, v, dtype, device="gpu", **attrs)
    assert y.shape == (bsz, h, n, dv)
    assert np.all(np.isfinite(y))
    ref = reference(*(rounded(t, dtype) for t in (q, k, v)), **attrs)
    err = rel_err(y, ref)
    print(f"{dtype} {structure} n={n}: rel err {err:.3e}")
    assert err <= TOL[dtype]


def large_inputs(salt):
    """B·H·n·d = 2^20 · 4: large enough for `auto` to take the GPU."""
    return random_qkv(rng_for(salt), 1, 16, 4, 4096, 64, 64)


@pytest.mark.parametrize("structure", ["block", "dense"])
def test_auto_on_large_input_matches_cpu(structure):
    q, k, v = large_inputs(200)
    y_cpu = run(q, k, v, device="cpu", structure=structure)
    y_auto = run(q, k, v, device="auto", structure=structure)
    err = rel_err(y_auto, y_cpu.astype(np.float64))
    print(f"auto vs cpu ({structure}): rel err {err:.3e}")
    assert err <= TOL["float32"]


def test_auto_takes_the_gpu_on_large_input_and_the_cpu_on_small():
    """The GPU kernels are deterministic (no floating-point atomics), so `auto` on the GPU
    gives exactly the forced GPU's bits, which differ from the CPU's in some element."""
    q, k, v = large_inputs(201)
    y_gpu = run(q, k, v, device="gpu")
    y_auto = run(q, k, v, device="auto")
    y_cpu = run(q, k, v, device="cpu")
    assert np.array_equal(y_auto, y_gpu), "auto did not run on the GPU"
    assert not np.array_equal(y_auto, y_cpu)
    # Below the threshold (B·H·n·d < 2^20) `auto` stays on the CPU.
    q, k, v = random_qkv(rng_for(202), 1, 2, 2, 300, 32, 32)
    y_small = run(q, k, v, device="auto")
    assert rel_err(y_small, run(q, k, v, device="cpu").astype(np.float64)) <= 1e-6
    assert not np.array_equal(y_small, run(q, k, v, device="gpu"))


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_auto_large_all_types(dtype):
    q, k, v = random_qkv(rng_for(203), 1, 16, 16, 1024, 64, 64)
    y_cpu = run(q, k, v, dtype, device="cpu")
    y_auto = run(q, k, v, dtype, device="auto")
    assert rel_err(y_auto, y_cpu.astype(np.float64)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_forced_gpu_bidirectional_matches_float64_reference(dtype):
    # causal = 0 on the GPU (cuda/bidir.cu): blocks of 64 with a short last one, GQA,
    # dk ≠ dv; and the dense operator on 100 tokens.
    for i, (structure, n, b) in enumerate((("block", 300, 64), ("dense", 100, 0))):
        q, k, v = random_qkv(rng_for(210 + i), 1, 2, 1, n, 32, 48)
        attrs = dict(structure=structure, block_size=b, gamma=0.6, causal=0)
        y = run(q, k, v, dtype, device="gpu", **attrs)
        ref = reference(*(rounded(t, dtype) for t in (q, k, v)), **attrs)
        err = rel_err(y, ref)
        print(f"{dtype} bidirectional {structure} n={n}: rel err {err:.3e}")
        assert err <= TOL[dtype], err


def test_forced_gpu_bidirectional_limits_and_auto():
    # Blocks above 128 rows are not taken by the GPU's bidirectional kernels.
    q, k, v = random_qkv(rng_for(204), 1, 2, 2, 300, 16, 16)
    msg = expect_error(lambda: run(q, k, v, device="gpu", causal=0, block_size=200), "128")
    assert "unsupported" in msg.lower() or "bidirectional" in msg.lower(), msg
    # `auto` with causal=0 takes the CPU, even when large (B·H·n·d = 2^20).
    q, k, v = (np.ascontiguousarray(t[:, :, :1024]) for t in large_inputs(205))
    attrs = dict(causal=0, block_size=128)
    y = run(q, k, v, device="auto", **attrs)
    assert rel_err(y, run(q, k, v, device="cpu", **attrs).astype(np.float64)) <= 1e-6


def test_forced_gpu_sparse_structure_is_an_error_status():
    q, k, v = random_qkv(rng_for(206), 1, 2, 2, 100, 16, 16)
    expect_error(lambda: run(q, k, v, device="gpu", structure="strided"), "strided", "GPU")


def test_forced_gpu_non_finite_input_names_it():
    q, k, v = random_qkv(rng_for(207), 1, 2, 2, 100, 16, 16)
    v = v.copy()
    v[0, 1, 50, 3] = np.nan
    expect_error(lambda: run(q, k, v, device="gpu"), "input V", "not finite")
    # The session still runs after the error.
    v[0, 1, 50, 3] = 0.0
    assert rel_err(run(q, k, v, device="gpu"), reference(q, k, v)) <= TOL["float32"]


def test_four_threads_share_one_gpu_session():
    sess = make_session("float32", device="gpu", block_size=32, gamma=0.6)
    rng = rng_for(208)
    inputs, refs = [], []
    for t in range(4):
        n = 300 + 97 * t
        q, k, v = random_qkv(rng, 1, 4, 2, n, 32, 24)
        inputs.append({"Q": q, "K": k, "V": v})
        refs.append(reference(q, k, v, block_size=32, gamma=0.6))
    errors = []

    def worker(t):
        try:
            for i in range(25):
                y = sess.run(None, inputs[t])[0]
                err = rel_err(y, refs[t])
                if err > TOL["float32"]:
                    errors.append(f"thread {t} run {i}: rel err {err:.3e}")
                    return
        except Exception as e:  # reported below, in the main thread
            errors.append(f"thread {t}: {e}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a thread hung"
    assert not errors, errors
