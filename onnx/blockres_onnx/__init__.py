"""Helpers for the ``blockres.ResolventAttention`` ONNX Runtime custom operator.

The operator computes resolvent attention ``Y = (1-γ)·A·(I-γA)⁻¹·V`` (SPEC §5):
inputs ``Q [B,H,n,dk]``, ``K [B,Hkv,n,dk]``, ``V [B,Hkv,n,dv]`` (float, float16 or
bfloat16), output ``Y [B,H,n,dv]``. Its kernels live in ``libblockres.so``, which any
ONNX Runtime ≥ 1.18 loads as a custom-op library.

Example::

    import numpy as np, onnxruntime as ort, blockres_onnx as br
    model = br.make_model(gamma=0.5, structure="block")
    sess = ort.InferenceSession(model.SerializeToString(), br.register(ort.SessionOptions()))
    q = np.random.randn(1, 8, 1024, 64).astype(np.float32)
    (y,) = sess.run(None, {"Q": q, "K": q, "V": q})

``ResolventAttention`` (a ``torch.nn.Module``, imported lazily so that torch stays
optional) runs an eager reference in PyTorch and exports as this op.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

DOMAIN = "blockres"
OP_TYPE = "ResolventAttention"
OPSET_VERSION = 1

#: The attributes of the op and their defaults (SPEC §5).
ATTRIBUTES = {
    "gamma": 0.5,
    "block_size": 0,
    "causal": 1,
    "scale": 0.0,
    "structure": "block",
    "stride": 0,
    "summary": 1,
    "alpha": 0.0,  # 0: the default window k = ceil(2·sqrt(n))
    "c_exp": 0.0,
    # The block query of the coarse logits (structure "block"; ignored by the others):
    # "mean" (the block's mean query) or "first" (its first token's query, strictly
    # causal, SPEC §2).
    "coarse_query": "mean",
    # Where the op runs; not part of the operator's math (SPEC §5), only of this
    # library: "auto" (the GPU for large causal block/dense calls when the library
    # was built with `cuda` and a GPU is present), "cpu" or "gpu". Left off the node
    # unless given, so BLOCKRES_DEVICE applies.
    "device": "auto",
}
_FLOAT_ATTRS = {"gamma", "scale", "alpha", "c_exp"}
_INT_ATTRS = {"block_size", "causal", "stride", "summary"}
STRUCTURES = ("block", "dense", "strided", "fixed", "topk")
DEVICES = ("auto", "cpu", "gpu")
COARSE_QUERIES = ("mean", "first")

_LIB_NAME = "libblockres.so"


def library_path() -> str:
    """Path of ``libblockres.so``.

    ``$BLOCKRES_LIBRARY`` wins; then the library inside this package (an installed
    wheel: ``pip install <repo>/onnx``); otherwise the cargo build output of the
    repository this package sits in (``$CARGO_TARGET_DIR`` or ``target``; ``release``,
    then ``debug``; the newer of ``<profile>/`` and ``<profile>/deps/``).
    """
    env = os.environ.get("BLOCKRES_LIBRARY")
    if env:
        return env
    packaged = Path(__file__).resolve().parent / _LIB_NAME
    if packaged.exists():
        return str(packaged)
    root = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or root / "target")
    if not target.is_absolute():
        target = root / target
    for profile in ("release", "debug"):
        # `cargo build` copies the library to target/<profile>/; `cargo test` builds it
        # in target/<profile>/deps/ only. Take the newer of the two.
        found = [p for p in (target / profile / _LIB_NAME, target / profile / "deps" / _LIB_NAME) if p.exists()]
        if found:
            return str(max(found, key=lambda p: p.stat().st_mtime))
    raise FileNotFoundError(
        f"{_LIB_NAME} not found: build it with `cargo build --release` in {root} "
        "or set BLOCKRES_LIBRARY to its path"
    )


def register(session_options=None, path: str | None = None):
    """Register the op library with onnxruntime ``SessionOptions`` and return them.

    >>> import onnxruntime as ort                                   # doctest: +SKIP
    >>> so = register(ort.SessionOptions())                         # doctest: +SKIP
    """
    if session_options is None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
    session_options.register_custom_ops_library(path or library_path())
    return session_options


def _attribute_values(attrs: dict) -> dict:
    out = {}
    for name, value in attrs.items():
        if name not in ATTRIBUTES:
            raise ValueError(
                f"unknown attribute {name!r}; the op has {', '.join(ATTRIBUTES)}"
            )
        if value is None:
            continue
        if name in _FLOAT_ATTRS:
            value = float(value)
        elif name in _INT_ATTRS:
            value = int(value)
        else:
            value = str(value)
        out[name] = value
    return out


def make_node(q="Q", k="K", v="V", y="Y", name: str | None = None, **attrs):
    """An ``onnx.NodeProto`` for the op; attributes not given keep their defaults.

    >>> n = make_node(gamma=0.9, structure="dense")
    >>> (n.domain, n.op_type, [a.name for a in n.attribute])
    ('blockres', 'ResolventAttention', ['gamma', 'structure'])
    >>> [a.s for a in make_node(device="gpu").attribute]
    [b'gpu']
    >>> [(a.name, a.s) for a in make_node(coarse_query="first").attribute]
    [('coarse_query', b'first')]
    """
    from onnx import helper

    return helper.make_node(
        OP_TYPE, [q, k, v], [y], name=name, domain=DOMAIN, **_attribute_values(attrs)
    )


def _elem_type(dtype):
    from onnx import TensorProto

    if isinstance(dtype, int):
        return dtype
    name = str(dtype).replace("torch.", "").replace("numpy.", "")
    table = {
        "float32": TensorProto.FLOAT,
        "float": TensorProto.FLOAT,
        "float16": TensorProto.FLOAT16,
        "half": TensorProto.FLOAT16,
        "bfloat16": TensorProto.BFLOAT16,
    }
    if name not in table:
        raise ValueError(f"element type {dtype!r}: expected float32, float16 or bfloat16")
    return table[name]


def make_model(
    dtype="float32",
    q_shape=("B", "H", "n", "dk"),
    k_shape=("B", "Hkv", "n", "dk"),
    v_shape=("B", "Hkv", "n", "dv"),
    opset: int = 17,
    ir_version: int = 9,
    **attrs,
):
    """A one-node ``onnx.ModelProto``: graph inputs Q, K, V, output Y.

    Shapes may mix ints and symbolic names; ``None`` leaves an input's shape unknown.
    ``attrs`` go to :func:`make_node` (``device="gpu"`` included): only those given are
    set on the node.

    >>> m = make_model("float16", gamma=0.25)
    >>> [o.domain for o in m.opset_import]
    ['', 'blockres']
    >>> [a.name for a in make_model(device="cpu").graph.node[0].attribute]
    ['device']
    >>> make_model(coarse_query="first").graph.node[0].attribute[0].s
    b'first'
    """
    from onnx import helper

    t = _elem_type(dtype)
    if q_shape is not None and v_shape is not None:
        y_shape = tuple(q_shape[:3]) + (v_shape[3],)
    else:
        y_shape = None
    inputs = [
        helper.make_tensor_value_info(name, t, shape)
        for name, shape in (("Q", q_shape), ("K", k_shape), ("V", v_shape))
    ]
    outputs = [helper.make_tensor_value_info("Y", t, y_shape)]
    graph = helper.make_graph([make_node(**attrs)], "resolvent_attention", inputs, outputs)
    return helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", opset),
            helper.make_opsetid(DOMAIN, OPSET_VERSION),
        ],
        ir_version=ir_version,
        producer_name="blockres_onnx",
    )


def session(model=None, session_options=None, providers=("CPUExecutionProvider",), **attrs):
    """An ``onnxruntime.InferenceSession`` on ``model`` (default: ``make_model(**attrs)``)
    with the library registered."""
    import onnxruntime as ort

    if model is None:
        model = make_model(**attrs)
    elif attrs:
        raise ValueError("give either a model or attributes for make_model, not both")
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    so = register(session_options or ort.SessionOptions())
    return ort.InferenceSession(data, so, providers=list(providers))


def auto_block_size(n: int, d: int = 64) -> int:
    """The block size ``block_size = 0`` resolves to: ``1.5·n^(1/3)`` rounded to a
    multiple of 16 within [16, 512], one block when ``n ≤ 2·b``. Mirrors
    ``blockres::auto_block_size`` (keep the two in step); used by the eager PyTorch
    reference.

    >>> auto_block_size(20), auto_block_size(4096), auto_block_size(1 << 16), auto_block_size(1 << 20)
    (20, 32, 64, 160)
    """
    del d  # the rule does not depend on the head width (yet)
    # Rust's f64::round rounds halves away from zero, Python's round() to even.
    # n ** (1/3) is not exact for cubes (4096 ** (1/3) = 15.999…); Rust's cbrt is.
    c = round(n ** (1.0 / 3.0))
    cbrt = float(c) if c**3 == n else n ** (1.0 / 3.0)
    b = min(max(math.floor(1.5 * cbrt / 16.0 + 0.5) * 16, 16), 512)
    return max(n, 1) if n <= 2 * b else b


def topk_window(n: int, alpha: float = 0.0, c_exp: float = 0.0) -> int:
    """The ``topk`` window ``ceil(alpha · n^c_exp)`` clamped to ``1..n``, with the op's
    defaults: ``alpha = 0`` means α = 2, and then ``c_exp = 0`` means C = ½. Mirrors
    ``blockres::cpu::sparse::topk_window``.

    >>> topk_window(1024), topk_window(1024, 3.0), topk_window(10, 100.0, 0.5)
    (64, 3, 10)
    """
    if alpha == 0.0:
        alpha, c_exp = 2.0, (c_exp if c_exp != 0.0 else 0.5)
    k = math.ceil(alpha * n**c_exp)
    return min(max(k, 1), max(n, 1))


def __getattr__(name):
    # torch is optional: import the module only when its classes are asked for.
    if name in ("ResolventAttention", "resolvent_attention_reference"):
        from . import torch_export

        return getattr(torch_export, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTRIBUTES",
    "COARSE_QUERIES",
    "DEVICES",
    "DOMAIN",
    "OP_TYPE",
    "OPSET_VERSION",
    "STRUCTURES",
    "ResolventAttention",
    "auto_block_size",
    "library_path",
    "make_model",
    "make_node",
    "register",
    "resolvent_attention_reference",
    "session",
    "topk_window",
]
