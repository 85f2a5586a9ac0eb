"""The op on onnxruntime's CUDA execution provider (onnxruntime-gpu), against the float64
reference of test_op.py: device inputs and outputs through IOBinding, the node placed
on the CUDA provider, several sessions and threads, errors at creation and at run,
CUDA graph capture.

Runs only with BLOCKRES_CUDA_EP_TESTS=1, on a machine with an NVIDIA GPU and
onnxruntime-gpu, with BLOCKRES_LIBRARY naming a libblockres.so built with
`--features cuda` (`cuda/ort_ep_check.sh` does all of it).
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

import blockres_onnx as br
from test_op import random_qkv, reference, rel_err, rng_for, rounded

pytestmark = pytest.mark.skipif(
    os.environ.get("BLOCKRES_CUDA_EP_TESTS") != "1",
    reason="CUDA-EP tests run only with BLOCKRES_CUDA_EP_TESTS=1 (GPU machine, onnxruntime-gpu)",
)

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}


def ort():
    import onnxruntime

    return onnxruntime


@pytest.fixture(scope="module", autouse=True)
def cuda_provider():
    """Fail (not skip) when the CUDA provider is missing: these tests must not pass on the CPU."""
    if hasattr(ort(), "preload_dlls"):
        ort().preload_dlls()  # the CUDA libraries of the pip packages
    if "CUDAExecutionProvider" not in ort().get_available_providers():
        pytest.fail(f"no CUDAExecutionProvider in {ort().get_available_providers()}")


def cuda_session(dtype="float32", options=None, provider_options=None, **attrs):
    """Like test_op.make_session (bfloat16 through Casts), on the CUDA provider."""
    model = _model(dtype, **attrs)
    so = br.register(options or ort().SessionOptions())
    providers = CUDA if provider_options is None else [("CUDAExecutionProvider", provider_options), "CPUExecutionProvider"]
    return ort().InferenceSession(model.SerializeToString(), so, providers=providers)


def _model(dtype, **attrs):
    from onnx import TensorProto, helper

    if dtype != "bfloat16":
        return br.make_model(dtype, **attrs)
    f, bf = TensorProto.FLOAT, TensorProto.BFLOAT16
    nodes = [helper.make_node("Cast", [x], [x + "16"], to=bf) for x in "QKV"]
    nodes.append(br.make_node("Q16", "K16", "V16", "Y16", **attrs))
    nodes.append(helper.make_node("Cast", ["Y16"], ["Y"], to=f))
    graph = helper.make_graph(
        nodes,
        "bf16",
        [helper.make_tensor_value_info(x, f, None) for x in "QKV"],
        [helper.make_tensor_value_info("Y", f, None)],
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(br.DOMAIN, 1)],
        ir_version=9,
    )


def run_bound(sess, q, k, v, dtype="float32"):
    """Inputs copied to the GPU first, output left there: only device tensors meet the op."""
    np_t = np.float16 if dtype == "float16" else np.float32
    binding = sess.io_binding()
    for name, x in zip("QKV", (q, k, v)):
        binding.bind_ortvalue_input(name, ort().OrtValue.ortvalue_from_numpy(x.astype(np_t), "cuda", 0))
    binding.bind_output("Y", "cuda", 0)
    sess.run_with_iobinding(binding)
    out = binding.get_outputs()[0]
    assert out.device_name().lower() == "cuda", out.device_name()
    return out.numpy()


CASES = [
    # (B, H, Hkv, n, dk, dv, attrs)
    (1, 4, 2, 200, 32, 48, dict(block_size=64, gamma=0.5)),  # GQA, dk ≠ dv, short last block
    (2, 3, 1, 333, 24, 40, dict(block_size=50, gamma=0.9)),  # B = 2, odd dk
    (1, 2, 2, 300, 64, 64, dict(block_size=0, gamma=0.7)),  # automatic block size (crate rule)
    (1, 2, 1, 150, 64, 32, dict(structure="dense", gamma=0.7)),
    (1, 2, 2, 1, 16, 16, dict(gamma=0.5)),  # n = 1
    (1, 4, 2, 200, 32, 48, dict(block_size=64, coarse_query="first", gamma=0.6)),
    (1, 4, 2, 200, 32, 48, dict(block_size=48, causal=0, gamma=0.5)),  # bidirectional
    (1, 2, 2, 100, 16, 16, dict(structure="dense", causal=0, gamma=0.8)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_float64_reference_with_device_tensors(dtype, case):
    bsz, h, hkv, n, dk, dv, attrs = CASES[case]
    rng = rng_for(300 + case)
    q, k, v = random_qkv(rng, bsz, h, hkv, n, dk, dv)
    y = run_bound(cuda_session(dtype, **attrs), q, k, v, dtype)
    x = [rounded(t, dtype) for t in (q, k, v)]
    ref_attrs = dict(attrs)
    if ref_attrs.get("block_size") == 0:
        ref_attrs["block_size"] = br.auto_block_size(n, max(dk, dv))
    err = rel_err(y, reference(*x, **ref_attrs))
    print(f"{dtype} case {case} n={n}: rel err {err:.3e}")
    assert err <= TOL[dtype], f"{dtype} {CASES[case]}: {err:.3e}"


def test_node_is_placed_on_the_cuda_provider(tmp_path):
    so = ort().SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = cuda_session("float16", options=so, block_size=64)
    rng = rng_for(320)
    q, k, v = random_qkv(rng, 1, 4, 4, 256, 64, 64)
    run_bound(sess, q, k, v, "float16")
    events = json.loads(open(sess.end_profiling()).read())
    providers = {
        e["args"].get("provider")
        for e in events
        if e.get("cat") == "Node" and e["args"].get("op_name") == "ResolventAttention"
    }
    assert providers == {"CUDAExecutionProvider"}, providers
    # No Memcpy nodes: the op takes the device tensors as they are.
    copies = {e["args"].get("op_name") for e in events if e.get("cat") == "Node"} & {"MemcpyToHost", "MemcpyFromHost"}
    assert not copies, copies


def test_sessions_and_threads_agree():
    rng = rng_for(321)
    q, k, v = random_qkv(rng, 1, 8, 2, 700, 64, 64)
    sessions = [cuda_session("float16", block_size=64, gamma=0.8) for _ in range(2)]
    want = run_bound(sessions[0], q, k, v, "float16")
    errors = []

    def work(sess):
        try:
            for _ in range(20):
                y = run_bound(sess, q, k, v, "float16")
                if not np.array_equal(y, want):
                    errors.append(float(np.max(np.abs(y.astype(np.float64) - want))))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(sessions[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_what_the_gpu_lacks_fails_at_session_creation():
    with pytest.raises(Exception) as e:
        cuda_session("float32", structure="topk")
    assert "no CUDA kernels" in str(e.value) and "topk" in str(e.value), str(e.value)
    with pytest.raises(Exception) as e:
        cuda_session("float32", causal=0, gamma=0.999)
    assert "gamma" in str(e.value) and "f64" in str(e.value), str(e.value)


def test_gpu_limit_is_an_error_status_at_run():
    sess = cuda_session("float32", causal=0, block_size=200)
    rng = rng_for(322)
    q, k, v = random_qkv(rng, 1, 1, 1, 300, 16, 16)
    with pytest.raises(Exception) as e:
        run_bound(sess, q, k, v)
    assert "bidirectional" in str(e.value) and "128" in str(e.value), str(e.value)
    # The session keeps working after the error.
    ok = cuda_session("float32", causal=0, block_size=64)
    assert np.isfinite(run_bound(ok, q, k, v)).all()


def test_cpu_provider_session_unchanged():
    """The same library, a CPU-provider session: the CPU registration, as before."""
    rng = rng_for(323)
    q, k, v = random_qkv(rng, 1, 2, 2, 100, 16, 16)
    sess = br.session(block_size=16)
    y = sess.run(None, {"Q": q, "K": k, "V": v})[0]
    assert rel_err(y, reference(q, k, v, block_size=16)) <= 1e-5


def test_cuda_graph_capture():
    """CUDA graph capture (provider option enable_cuda_graph): the op enqueues only
    capturable work (launches, memsets) once its scratch is sized; replays must give the
    result of a plain run on new inputs copied into the bound buffers."""
    rng = rng_for(324)
    q, k, v = random_qkv(rng, 1, 4, 4, 512, 64, 64)
    plain = cuda_session("float16", block_size=64)
    sess = cuda_session("float16", provider_options={"enable_cuda_graph": "1"}, block_size=64)
    vals = [ort().OrtValue.ortvalue_from_numpy(x.astype(np.float16), "cuda", 0) for x in (q, k, v)]
    y = ort().OrtValue.ortvalue_from_shape_and_type((1, 4, 512, 64), np.float16, "cuda", 0)
    binding = sess.io_binding()
    for name, x in zip("QKV", vals):
        binding.bind_ortvalue_input(name, x)
    binding.bind_ortvalue_output("Y", y)
    for _ in range(3):
        sess.run_with_iobinding(binding)
    np.testing.assert_array_equal(y.numpy(), run_bound(plain, q, k, v, "float16"))
    q2, k2, v2 = random_qkv(rng, 1, 4, 4, 512, 64, 64)
    for x, new in zip(vals, (q2, k2, v2)):
        x.update_inplace(new.astype(np.float16))
    sess.run_with_iobinding(binding)
    np.testing.assert_array_equal(y.numpy(), run_bound(plain, q2, k2, v2, "float16"))
