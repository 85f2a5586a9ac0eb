"""The `device` attribute and BLOCKRES_DEVICE, on any machine (CI has no GPU, and its
library is built without the `cuda` feature). The GPU results themselves are checked
by test_op_gpu.py on the GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import blockres_onnx as br
from test_op import expect_error, make_session, random_qkv, reference, rel_err, rng_for, run

ONNX_DIR = Path(__file__).resolve().parents[1]

#: Only a library built without the feature carries this message.
NO_CUDA_MARKER = b"built without the `cuda` feature"


def library_has_cuda() -> bool:
    return NO_CUDA_MARKER not in Path(br.library_path()).read_bytes()


@pytest.mark.parametrize("structure", ["block", "dense", "strided"])
def test_cpu_and_auto_match_the_default(structure):
    rng = rng_for(21)
    q, k, v = random_qkv(rng, 1, 4, 2, 150, 16, 8)
    attrs = dict(structure=structure, block_size=16, gamma=0.7)
    y0 = run(q, k, v, **attrs)
    assert rel_err(y0, reference(q, k, v, **attrs)) <= 1e-5
    for device in ("cpu", "auto"):
        y = run(q, k, v, device=device, **attrs)
        np.testing.assert_array_equal(y, y0, err_msg=f"device={device}")


def test_auto_on_a_large_input_matches_cpu():
    """B·H·n·d = 2^20, where `auto` takes the GPU if there is one: same result as the
    CPU within the tolerance (with the CUDA-built library on a machine without a GPU,
    `auto` runs on the CPU without a word)."""
    rng = rng_for(22)
    q, k, v = random_qkv(rng, 1, 16, 4, 1024, 64, 64)
    y_cpu = run(q, k, v, device="cpu")
    y_auto = run(q, k, v, device="auto")
    assert rel_err(y_auto, y_cpu.astype(np.float64)) <= 1e-4


@pytest.mark.parametrize("value", ["bogus", "GPU", "cuda", ""])
def test_bad_device_names_the_attribute(value):
    expect_error(lambda: br.session(device=value), "attribute device", "'auto'", "'cpu'", "'gpu'", f"'{value}'")


def test_device_of_the_wrong_type():
    model = br.make_model()
    node = helper.make_node("ResolventAttention", ["Q", "K", "V"], ["Y"], domain="blockres", device=1)
    model.graph.node[0].CopyFrom(node)
    expect_error(lambda: br.session(model), "attribute device", "a string", "an int")


def test_gpu_without_the_feature_is_an_error_status():
    if library_has_cuda():
        pytest.skip("the library was built with `cuda`: test_op_gpu.py and the check below cover it")
    rng = rng_for(23)
    q, k, v = random_qkv(rng, 1, 2, 2, 64, 8, 8)
    for dtype in ("float32", "float16", "bfloat16"):
        msg = expect_error(lambda: run(q, k, v, dtype, device="gpu"), "`cuda` feature", "--features cuda")
        assert "panic" not in msg
    # The session is still usable, and the same model on the CPU runs.
    sess = make_session("float32", device="gpu")
    expect_error(lambda: sess.run(None, {"Q": q, "K": k, "V": v}), "cuda")
    assert rel_err(run(q, k, v, device="cpu"), reference(q, k, v)) <= 1e-5


def test_gpu_with_the_feature_but_no_usable_gpu_is_an_error_status():
    """With a CUDA-built library: forced `gpu` either runs (a GPU is there) or fails with
    the reason, which names CUDA; never a crash."""
    if not library_has_cuda():
        pytest.skip("the library was built without `cuda`")
    rng = rng_for(24)
    q, k, v = random_qkv(rng, 1, 2, 2, 64, 8, 8)
    try:
        y = run(q, k, v, device="gpu")
    except Exception as e:  # no GPU here
        assert "cuda" in str(e).lower() and "panic" not in str(e), str(e)
        return
    assert rel_err(y, reference(q, k, v)) <= 1e-4


ENV_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    sys.path.insert(0, {onnx_dir!r})
    import blockres_onnx as br
    out = {{}}
    rng = np.random.default_rng(5)
    x = dict(zip("QKV", (rng.standard_normal((1, 2, 40, 8)).astype(np.float32) for _ in range(3))))
    for label, attrs in (("none", {{}}), ("cpu", {{"device": "cpu"}})):
        try:
            out[label] = br.session(**attrs).run(None, x)[0].tolist()
        except Exception as e:
            out[label] = str(e)
    out["x"] = {{n: a.tolist() for n, a in x.items()}}
    print(json.dumps(out))
    """
)


def run_with_env(value):
    """Two sessions in a fresh process with BLOCKRES_DEVICE=value (it is read once per
    process): one node without `device`, one with device='cpu'."""
    env = dict(os.environ, BLOCKRES_DEVICE=value)
    script = ENV_SCRIPT.format(onnx_dir=str(ONNX_DIR))
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    x = {n: np.array(a, np.float32) for n, a in out.pop("x").items()}
    return out, reference(x["Q"], x["K"], x["V"])


def test_env_cpu_and_auto_run():
    for value in ("cpu", "auto", ""):
        out, ref = run_with_env(value)
        for label in ("none", "cpu"):
            assert not isinstance(out[label], str), out[label]
            assert rel_err(np.array(out[label]), ref) <= 1e-5


def test_env_bad_value_names_the_variable_and_the_attribute_wins():
    out, ref = run_with_env("bogus")
    assert isinstance(out["none"], str)
    for needle in ("BLOCKRES_DEVICE", "'bogus'", "'auto'", "'gpu'"):
        assert needle in out["none"], out["none"]
    assert rel_err(np.array(out["cpu"]), ref) <= 1e-5


def test_env_gpu_applies_to_nodes_without_the_attribute():
    out, ref = run_with_env("gpu")
    assert rel_err(np.array(out["cpu"]), ref) <= 1e-5
    if isinstance(out["none"], str):
        assert "cuda" in out["none"].lower(), out["none"]
        if not library_has_cuda():
            assert "`cuda` feature" in out["none"], out["none"]
    else:  # a GPU ran it
        assert library_has_cuda()
        assert rel_err(np.array(out["none"]), ref) <= 1e-4


STUB_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {onnx_dir!r})
    import blockres_onnx as br
    rng = np.random.default_rng(0)
    # Large enough that `auto` would take the GPU (B·H·n·d = 2^20).
    q = rng.standard_normal((1, 4, 4096, 64)).astype(np.float32)
    feeds = {{"Q": q, "K": q, "V": q}}
    y_auto = br.session(gamma=0.5, block_size=64).run(None, feeds)[0]
    y_cpu = br.session(gamma=0.5, block_size=64, device="cpu").run(None, feeds)[0]
    assert np.array_equal(y_auto, y_cpu)
    try:
        br.session(gamma=0.5, block_size=64, device="gpu").run(None, feeds)
    except Exception as e:
        assert "panic" not in str(e) and "cuda" in str(e).lower(), str(e)
    else:
        raise AssertionError("device=gpu ran on a stub driver")
    print("ok")
    """
)


def test_a_driver_library_without_its_symbols_falls_back_to_the_cpu(tmp_path):
    """Issue 10: a libcuda lacking symbols (a stub, an old driver) made cudarc panic and
    every `auto` run fail; it must count as "no GPU"."""
    if not library_has_cuda():
        pytest.skip("the library was built without `cuda`")
    src = tmp_path / "stub.c"
    src.write_text("int blockres_stub_driver;\n")
    for name in ("libcuda.so", "libcuda.so.1"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(tmp_path / name), str(src)], check=True)
    env = dict(os.environ, LD_LIBRARY_PATH=str(tmp_path))
    env.pop("BLOCKRES_DEVICE", None)
    script = STUB_SCRIPT.format(onnx_dir=str(ONNX_DIR))
    p = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stderr[-3000:]
