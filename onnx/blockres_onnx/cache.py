"""Decoding with ``blockres.ResolventAttentionWithCache`` (SPEC §6, docs/decoding.md).

The op continues a causal sequence from cached state. Its state tensors follow ONNX
Runtime's ``GroupQueryAttention``: ``past_*`` inputs, ``present_*`` outputs with a
capacity dimension, and ``past_sequence_length``. Bind one preallocated buffer as both
``past_x`` and ``present_x`` (IOBinding) and a step writes only its new rows in place:

    import numpy as np, onnxruntime as ort, blockres_onnx as br
    from blockres_onnx.cache import Cache, make_cache_model
    model = make_cache_model(gamma=0.9, structure="block", block_size=64)
    sess = br.session(model)
    cache = Cache(batch=1, heads=8, kv_heads=8, dk=64, dv=64, capacity=4096, block_size=64)
    y = cache.run(sess, q, k, v)          # prefill: q [1, 8, P, 64] …
    y = cache.run(sess, q1, k1, v1)       # one step: q1 [1, 8, 1, 64] …
"""

from __future__ import annotations

import numpy as np

from . import DOMAIN, OPSET_VERSION, _attribute_values, _elem_type

OP_TYPE = "ResolventAttentionWithCache"
INPUTS = (
    "query",
    "key",
    "value",
    "past_key",
    "past_value",
    "past_sequence_length",
    "past_block_key",
    "past_block_value",
    "past_coarse",
)
OUTPUTS = (
    "output",
    "present_key",
    "present_value",
    "present_block_key",
    "present_block_value",
    "present_coarse",
)


def make_cache_node(structure="block", **attrs):
    """The op's node; ``dense`` leaves out the block-state inputs and outputs.

    >>> n = make_cache_node(structure="dense", gamma=0.5)
    >>> (n.op_type, list(n.input), list(n.output))
    ('ResolventAttentionWithCache', ['query', 'key', 'value', 'past_key', 'past_value', 'past_sequence_length'], ['output', 'present_key', 'present_value'])
    >>> [a.name for a in make_cache_node(block_size=16).attribute]
    ['coarse_query', 'block_size', 'structure']
    """
    from onnx import helper

    block = structure == "block"
    if block:
        attrs.setdefault("coarse_query", "first")
    attrs["structure"] = structure
    ins = INPUTS if block else INPUTS[:6]
    outs = OUTPUTS if block else OUTPUTS[:3]
    return helper.make_node(OP_TYPE, list(ins), list(outs), domain=DOMAIN, **_attribute_values(attrs))


def make_cache_model(dtype="float32", opset=17, ir_version=9, **attrs):
    """A one-node model of the op with every state input and output as a graph
    input/output (shapes symbolic)."""
    from onnx import TensorProto, helper

    node = make_cache_node(**attrs)
    t = _elem_type(dtype)
    f = TensorProto.FLOAT
    shapes = {
        "query": (t, ["B", "H", "s", "dk"]),
        "key": (t, ["B", "Hkv", "s", "dk"]),
        "value": (t, ["B", "Hkv", "s", "dv"]),
        "past_key": (f, ["B", "Hkv", "C", "dk"]),
        "past_value": (f, ["B", "H", "C", "dv"]),
        "past_sequence_length": (TensorProto.INT64, [1]),
        "past_block_key": (f, ["B", "Hkv", "M", "dk"]),
        "past_block_value": (f, ["B", "H", "M", "dv"]),
        "past_coarse": (f, ["B", "H", "W"]),
        "output": (t, ["B", "H", "s", "dv"]),
        "present_key": (f, ["B", "Hkv", "C2", "dk"]),
        "present_value": (f, ["B", "H", "C2", "dv"]),
        "present_block_key": (f, ["B", "Hkv", "M2", "dk"]),
        "present_block_value": (f, ["B", "H", "M2", "dv"]),
        "present_coarse": (f, ["B", "H", "W"]),
    }
    vi = lambda name: helper.make_tensor_value_info(name, *shapes[name])  # noqa: E731
    graph = helper.make_graph(
        [node], "resolvent_attention_with_cache", [vi(x) for x in node.input], [vi(x) for x in node.output]
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, OPSET_VERSION)],
        ir_version=ir_version,
        producer_name="blockres_onnx",
    )


class Cache:
    """Preallocated decoding state shared between ``past_*`` and ``present_*``.

    ``capacity`` is the longest sequence; ``block_size`` is the node's (0 for dense).
    :meth:`run` binds the buffers with IOBinding as both input and output, so the op
    writes the new rows in place and nothing is copied between steps.
    """

    def __init__(self, batch, heads, kv_heads, dk, dv, capacity, block_size=0):
        import onnxruntime as ort

        self.length = 0
        self.capacity = capacity
        self.block_size = block_size
        z = lambda *s: np.zeros(s, np.float32)  # noqa: E731
        self.arrays = {
            "key": z(batch, kv_heads, capacity, dk),
            "value": z(batch, heads, capacity, dv),
        }
        if block_size:
            m = capacity // block_size + 1
            self.arrays.update(
                block_key=z(batch, kv_heads, m, dk),
                block_value=z(batch, heads, m, dv),
                coarse=z(batch, heads, dv + 3),
            )
        self.values = {k: ort.OrtValue.ortvalue_from_numpy(a) for k, a in self.arrays.items()}

    def run(self, sess, q, k, v):
        """Append ``q, k, v`` (``[B, H, s, dk]`` …) and return their output rows."""
        s = q.shape[2]
        if self.length + s > self.capacity:
            raise ValueError(f"{self.length} + {s} tokens exceed the capacity {self.capacity}")
        io = sess.io_binding()
        for name, x in (("query", q), ("key", k), ("value", v)):
            io.bind_cpu_input(name, np.ascontiguousarray(x))
        io.bind_cpu_input("past_sequence_length", np.array([self.length], np.int64))
        io.bind_output("output")
        for name, val in self.values.items():
            io.bind_ortvalue_input("past_" + name, val)
            io.bind_ortvalue_output("present_" + name, val)
        sess.run_with_iobinding(io)
        self.length += s
        return io.copy_outputs_to_cpu()[0]
