#!/usr/bin/env python3
"""Streaming generation through onnxruntime with ``blockres.ResolventAttentionWithCache``.

    .venv/bin/python onnx/tracking/stream.py                    # block model, n = 256 1024 4096
    .venv/bin/python onnx/tracking/stream.py --kinds block dense --lengths 256 1024
    .venv/bin/python onnx/tracking/stream.py --build-only       # rewrite the decode models, exit

**The decode models.** :func:`build_decode_model` rewrites a shipped tracking model
(``onnx/models/tracking/tracking_{block,dense}.onnx``) into a decode-mode model: every
``blockres.ResolventAttention`` node (one per layer and head) becomes a
``blockres.ResolventAttentionWithCache`` node with the same attributes, whose state
tensors are graph inputs ``past_<state>_l<layer>h<head>`` and outputs
``present_<state>_l<layer>h<head>`` (block: key, value, block_key, block_value, coarse;
dense: key, value); the graph gets the input ``past_sequence_length`` (int64 [1]).
Everything else — the weights, the embedding, the norms, the MLPs, the read-out — is the
shipped graph, untouched. Only the recency channel changes: the shipped model writes
``(j − (n − 1))/8`` for the key at position j of a sequence of n tokens, which a
decoder cannot know in advance; the decode model writes ``(j − R)/8`` with the absolute
position ``j = past_sequence_length + arange(s)`` and a constant reference R (default 0,
stored in the model's metadata). A constant shift of a key channel whose query channel
is the same for every query of a head (the slope) adds one constant to every logit of a
row — exact logits and coarse block logits alike — so the attention is unchanged; only
float32 rounding differs (see the printed max |Δ|). With R = n − 1 one call on the whole
sequence is bit for bit the shipped model (tested). Rounding: the recency term of a
logit is about slope·|j − R|/8 (up to ~4·10³ at |j − R| = 4096), and float32 keeps it to
one ulp of that size, so the error grows with the distance of the *recent* tokens from
R: the shipped full model (R = n − 1) is least accurate at its first rows, the stream
(R = 0) at its last ones — both ~5–9e-4 relative to a float64 evaluation at n = 4096,
~1e-5 at n = 256. ``--reference`` tries another R.

The models are written to ``onnx/models/tracking/decode/`` (``--rebuild`` redoes it from
the shipped files; ``decode/HOW.txt`` records how). :class:`Stream` holds one
preallocated OrtValue per state tensor, bound with IOBinding as both ``past_*`` and
``present_*``, so every call appends its rows in place.

**The demo.** For each length it generates fresh sequences
(``blockres_onnx.tracking.generate``), feeds them token by token (batch 1 unless
``--batch``), answers each ASK from the logits of its object token as it arrives, and
prints per-token latency, tokens/s, the streamed query accuracy and the max |Δ| (over
max |logit|) between the streamed logits and the shipped full-sequence model on the
same tokens; then the same with a prefill of the first half of each sequence in one call
followed by steps of ``--step`` tokens. "old way" is the shipped model re-run on the
whole prefix for each new token: its time per token at context n is one full run on n
tokens (measured), and at ``--old-length`` tokens a full old-way stream is run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import blockres_onnx as br  # noqa: E402
from blockres_onnx.tracking import Task, generate  # noqa: E402

MODELS = HERE.parent / "models" / "tracking"
DECODE = MODELS / "decode"
CACHE_OP = "ResolventAttentionWithCache"
STATES = {"block": ("key", "value", "block_key", "block_value", "coarse"), "dense": ("key", "value")}


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper

            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _producer(graph, name):
    return next(n for n in graph.node if name in n.output)


def build_decode_model(kind="block", models=MODELS, reference=0):
    """The decode-mode ``onnx.ModelProto`` of the shipped ``tracking_<kind>.onnx``.

    Inputs ``tokens [B, s]`` int64, ``past_sequence_length`` int64 [1] and every state
    ``past_*``; outputs ``logits [B, s, K]`` and every ``present_*``. ``reference`` is R
    of the recency channel ``(j − R)/8`` (j the absolute position).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(Path(models) / f"tracking_{kind}.onnx"))
    g = model.graph
    # 1. Positions. The shipped chain: arange(n) → Sub(arange, n − 1) → Div(·, 8).
    #    Replace the subtrahend n − 1 by R − past_sequence_length (a float [1]).
    (rng,) = [n for n in g.node if n.op_type == "Range"]
    (sub,) = [n for n in g.node if n.op_type == "Sub" and n.input[0] == rng.output[0]]
    (div,) = [n for n in g.node if n.op_type == "Div" and n.input[0] == sub.output[0]]
    g.initializer.append(helper.make_tensor("decode_reference", TensorProto.INT64, [1], [int(reference)]))
    pos_nodes = [
        helper.make_node("Sub", ["decode_reference", "past_sequence_length"], ["decode_offset_i"]),
        helper.make_node("Cast", ["decode_offset_i"], ["decode_offset"], to=TensorProto.FLOAT),
    ]
    sub.input[1] = "decode_offset"
    # 2. Attention nodes → the cache op, state tensors as graph inputs/outputs.
    heads = None
    attn = [n for n in g.node if n.domain == br.DOMAIN and n.op_type == br.OP_TYPE]
    inputs, outputs, meta_nodes = [], [], []
    f = TensorProto.FLOAT
    block_size = 0
    for i, node in enumerate(attn):
        structure = _attr(node, "structure", "block")
        if structure != kind:
            raise ValueError(f"node {node.name or i}: structure {structure!r} in the {kind} model")
        if structure == "block":
            if _attr(node, "coarse_query", "mean") != "first" or not _attr(node, "block_size", 0):
                raise ValueError("only block nodes with coarse_query = first and a fixed block_size decode")
            block_size = int(_attr(node, "block_size"))
        # Head count: the Concat that gathers this layer's heads.
        if heads is None:
            cat = next(n for n in g.node if n.op_type == "Concat" and node.output[0] in n.input)
            heads = len(cat.input)
        layer, head = divmod(i, heads)
        tag = f"l{layer}h{head}"
        # q/k/v of one head: [B, 1, s, dh + 1] / [B, 1, s, dh + 1] / [B, 1, s, dh].
        dk = dv = None
        for vi in g.value_info:
            if vi.name in (node.input[0], node.input[2]):
                d = vi.type.tensor_type.shape.dim[3]
                if d.HasField("dim_value"):
                    if vi.name == node.input[0]:
                        dk = d.dim_value
                    else:
                        dv = d.dim_value
        if dk is None or dv is None:
            raise ValueError(f"node {tag}: q/v widths not in the graph's value_info")
        shapes = {
            "key": ["batch", 1, "capacity", dk],
            "value": ["batch", 1, "capacity", dv],
            "block_key": ["batch", 1, "blocks", dk],
            "block_value": ["batch", 1, "blocks", dv],
            "coarse": ["batch", 1, dv + 3],
        }
        names = STATES[kind]
        past = [f"past_{s}_{tag}" for s in names]
        present = [f"present_{s}_{tag}" for s in names]
        ins = list(node.input) + past[:2] + ["past_sequence_length"] + past[2:]
        outs = [node.output[0]] + present
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
        new = helper.make_node(CACHE_OP, ins, outs, name=f"attn_{tag}", domain=br.DOMAIN, **attrs)
        node.CopyFrom(new)
        inputs += [helper.make_tensor_value_info(p, f, shapes[s]) for p, s in zip(past, names)]
        outputs += [helper.make_tensor_value_info(p, f, shapes[s]) for p, s in zip(present, names)]
        meta_nodes.append({"tag": tag, "dk": dk, "dv": dv, "block_size": block_size,
                           "gamma": attrs.get("gamma")})
    # Insert the position nodes before the Sub that uses them (topological order).
    at = list(g.node).index(sub)
    for j, n in enumerate(pos_nodes):
        g.node.insert(at + j, n)
    # 3. Drop what no longer feeds anything (the old n − 1).
    _prune(g)
    # Graph inputs/outputs: tokens [batch, s], past_sequence_length, states.
    tokens = next(x for x in g.input if x.name == "tokens")
    tokens.type.tensor_type.shape.dim[1].dim_param = "s"
    logits = next(x for x in g.output if x.name == "logits")
    logits.type.tensor_type.shape.dim[1].dim_param = "s"
    for vi in g.value_info:  # n of the full model is s of a call
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param == "n":
                d.dim_param = "s"
    g.input.append(helper.make_tensor_value_info("past_sequence_length", TensorProto.INT64, [1]))
    g.input.extend(inputs)
    g.output.extend(outputs)
    g.name = f"tracking_{kind}_decode"
    meta = {"kind": kind, "reference": int(reference), "block_size": block_size, "heads": heads,
            "states": list(STATES[kind]), "nodes": meta_nodes,
            "source": f"tracking_{kind}.onnx"}
    del model.metadata_props[:]
    helper.set_model_props(model, {"blockres.decode": json.dumps(meta)})
    model.producer_name = "blockres_onnx (onnx/tracking/stream.py)"
    onnx.checker.check_model(model)
    return model


def shipped_torch_model(kind="block", models=MODELS, dtype=None):
    """The shipped ``tracking_<kind>.onnx`` as a PyTorch ``TrackingModel`` (float64 by
    default), its weights read from the ONNX initializers (the checkpoints are not
    shipped): a wider-precision reference for both the full and the streamed model."""
    import math

    import onnx
    import torch
    from onnx import numpy_helper

    from blockres_onnx.tracking_model import ModelConfig, TrackingModel

    manifest = json.loads((Path(models) / "manifest.json").read_text())
    cfg = ModelConfig(**{k: v for k, v in manifest["model_configs"][kind].items()
                         if k in ModelConfig.__dataclass_fields__})
    g = onnx.load(str(Path(models) / f"tracking_{kind}.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    t = lambda a: torch.from_numpy(np.array(a, np.float64))  # noqa: E731
    mats = [init[n.input[1]] for n in g.node if n.op_type == "MatMul" and n.input[1] in init]
    slopes = [init[n.input[0]] for n in g.node if n.op_type == "Expand" and n.input[0] in init]
    gammas = [_attr(n, "gamma") for n in g.node if n.domain == br.DOMAIN]
    if len(mats) != 4 * cfg.layers + 1 or len(slopes) != cfg.layers:
        raise ValueError(f"{kind}: unexpected graph ({len(mats)} weight matrices, {len(slopes)} slope tensors)")
    model = TrackingModel(cfg).double().eval()
    scale = 1.0 / math.sqrt(cfg.d_model // cfg.heads + 1)
    with torch.no_grad():
        model.embed.weight.copy_(t(init["embed.weight"]))
        model.norm.weight.copy_(t(init["norm.weight"]))
        model.head.weight.copy_(t(mats[-1]).T)
        model.head.bias.copy_(t(init["head.bias"]))
        for i, layer in enumerate(model.layers):
            qkv, out, m0, m2 = mats[4 * i : 4 * i + 4]
            layer.norm1.weight.copy_(t(init[f"layers.{i}.norm1.weight"]))
            layer.norm2.weight.copy_(t(init[f"layers.{i}.norm2.weight"]))
            layer.attn.qkv.weight.copy_(t(qkv).T)
            layer.attn.out.weight.copy_(t(out).T)
            layer.mlp[0].weight.copy_(t(m0).T)
            layer.mlp[0].bias.copy_(t(init[f"layers.{i}.mlp.0.bias"]))
            layer.mlp[2].weight.copy_(t(m2).T)
            layer.mlp[2].bias.copy_(t(init[f"layers.{i}.mlp.2.bias"]))
            # The graph holds softplus(slope)/scale; invert softplus in float64.
            layer.attn.slope.copy_(torch.log(torch.expm1(t(slopes[i]).flatten() * scale)))
            if gammas:
                layer.attn.frozen_gamma = [float(x) for x in gammas[cfg.heads * i : cfg.heads * (i + 1)]]
    return model if dtype is None else model.to(dtype)


def reference_logits(model, tokens):
    """``model`` (from :func:`shipped_torch_model`) on ``tokens``, as float64 numpy."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(tokens)).double().numpy()


def _prune(g):
    """Remove nodes whose outputs feed nothing (and their orphaned initializers/value_info)."""
    while True:
        used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {x for n in g.node for x in n.input} | {o.name for o in g.output}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    produced = {o for n in g.node for o in n.output}
    for vi in [v for v in g.value_info if v.name not in produced]:
        g.value_info.remove(vi)


def decode_path(kind):
    return DECODE / f"tracking_{kind}_decode.onnx"


def write_decode_models(kinds=("block", "dense"), reference=0):
    """(Re)build the decode models from the shipped files and write them to decode/."""
    import onnx

    DECODE.mkdir(parents=True, exist_ok=True)
    out = []
    for kind in kinds:
        path = decode_path(kind)
        onnx.save(build_decode_model(kind, reference=reference), str(path))
        out.append(path)
    return out


def decode_model(kind, rebuild=False):
    """Path of the decode model of ``kind``, built first if missing (or ``rebuild``)."""
    path = decode_path(kind)
    if rebuild or not path.exists():
        write_decode_models([kind])
    return path


def session(model, threads=0):
    import onnxruntime as ort

    so = br.register(ort.SessionOptions())
    if threads:
        so.intra_op_num_threads = threads
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def decode_meta(sess):
    return json.loads(sess.get_modelmeta().custom_metadata_map["blockres.decode"])


class Stream:
    """One decoding stream of ``batch`` sequences of at most ``capacity`` tokens.

    Every state tensor is one preallocated float32 buffer (an OrtValue over a numpy
    array), bound once as ``past_x`` and ``present_x``; the op writes each call's new
    rows into it. A one-token step also reuses its input and output buffers.

        sess = session(decode_model("block"))
        st = Stream(sess, batch=1, capacity=4096)
        logits = st.run(tokens[:, :100])      # prefill
        logits = st.run(tokens[:, 100:101])   # one step …
    """

    def __init__(self, sess, batch, capacity):
        import onnxruntime as ort

        self.sess, self.batch, self.capacity = sess, batch, capacity
        self.meta = decode_meta(sess)
        self.length = 0
        blocks = capacity // self.meta["block_size"] + 1 if self.meta["block_size"] else 0
        dims = {"batch": batch, "capacity": capacity, "blocks": blocks}
        self.arrays, self.values = {}, {}
        for x in sess.get_inputs():
            if not x.name.startswith("past_") or x.name == "past_sequence_length":
                continue
            shape = [dims.get(d, d) for d in x.shape]
            self.arrays[x.name[5:]] = a = np.zeros(shape, np.float32)
            self.values[x.name[5:]] = ort.OrtValue.ortvalue_from_numpy(a)
        self.pos = np.zeros(1, np.int64)
        self.step_tokens = np.zeros((batch, 1), np.int64)
        k = sess.get_outputs()[0].shape[-1]
        self.step_logits = np.zeros((batch, 1, k), np.float32)
        self._pos = ort.OrtValue.ortvalue_from_numpy(self.pos)
        self._tok = ort.OrtValue.ortvalue_from_numpy(self.step_tokens)
        self._out = ort.OrtValue.ortvalue_from_numpy(self.step_logits)
        io = self.io = sess.io_binding()
        io.bind_output("logits")  # first, so that it stays output 0 when rebound
        for name, val in self.values.items():
            io.bind_ortvalue_input("past_" + name, val)
            io.bind_ortvalue_output("present_" + name, val)
        io.bind_ortvalue_input("past_sequence_length", self._pos)
        self._step_bound = None

    def data_ptrs(self):
        return {name: val.data_ptr() for name, val in self.values.items()}

    def reset(self):
        """Start over (the buffers are kept; rows past the length are never read)."""
        self.length = 0
        for a in self.arrays.values():
            a[...] = 0

    def run(self, tokens):
        """Append ``tokens [B, s]``; return their logits ``[B, s, K]``.

        A one-token call returns a view of the stream's logits buffer (overwritten by
        the next step): copy it to keep it.
        """
        import onnxruntime as ort

        s = tokens.shape[1]
        if tokens.shape[0] != self.batch:
            raise ValueError(f"tokens: expected batch {self.batch}, got {tokens.shape[0]}")
        if self.length + s > self.capacity:
            raise ValueError(f"{self.length} + {s} tokens exceed the capacity {self.capacity}")
        self.pos[0] = self.length
        io = self.io
        if s == 1:
            self.step_tokens[...] = tokens
            if self._step_bound is not True:
                io.bind_ortvalue_input("tokens", self._tok)
                io.bind_ortvalue_output("logits", self._out)
                self._step_bound = True
            self.sess.run_with_iobinding(io)
            out = self.step_logits
        else:
            x = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tokens, np.int64))
            io.bind_ortvalue_input("tokens", x)
            io.bind_output("logits")
            self._step_bound = False
            self.sess.run_with_iobinding(io)
            out = io.get_outputs()[0].numpy()
        self.length += s
        return out


# ----------------------------------------------------------------------------- demo


def rel_diff(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def stream_tokens(st, tokens, batch_asks, prefill=0, step=1, progress=None):
    """Feed ``tokens [B, n]``: ``prefill`` tokens in one call, then calls of ``step``
    tokens; answer every ASK as its object token arrives. Returns (logits [B, n, K],
    per-call seconds of the steps, prefill seconds, answers [B, n] with −1 elsewhere)."""
    b, n = tokens.shape
    logits = np.zeros((b, n, st.step_logits.shape[-1]), np.float32)
    answers = np.full((b, n), -1, np.int64)
    times, t_prefill = [], 0.0
    lo = 0
    if prefill:
        t0 = time.perf_counter()
        logits[:, :prefill] = st.run(tokens[:, :prefill])
        t_prefill = time.perf_counter() - t0
        lo = prefill
    last = time.perf_counter()
    while lo < n:
        hi = min(n, lo + step)
        t0 = time.perf_counter()
        out = st.run(tokens[:, lo:hi])
        # Answer the queries whose object token just arrived.
        asks = batch_asks[:, lo:hi]
        if asks.any():
            answers[:, lo:hi][asks] = out.argmax(-1)[asks]
        times.append(time.perf_counter() - t0)
        logits[:, lo:hi] = out
        lo = hi
        if progress and time.perf_counter() - last > 3.0:
            last = time.perf_counter()
            progress(lo, n, times)
    if prefill:
        answers[:, :prefill][batch_asks[:, :prefill]] = logits[:, :prefill].argmax(-1)[batch_asks[:, :prefill]]
    return logits, np.array(times), t_prefill, answers


def accuracy(answers, batch):
    m = batch.ask_mask
    return float((answers[m] == batch.answers[m]).mean()), int(m.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kinds", nargs="+", default=["block"], choices=["block", "dense"])
    p.add_argument("--lengths", nargs="+", type=int, default=[256, 1024, 4096])
    p.add_argument("--sequences", type=int, default=0,
                   help="sequences per length (default: 4 at ≤ 256, 2 at ≤ 1024, else 1)")
    p.add_argument("--batch", type=int, default=1, help="sequences streamed side by side")
    p.add_argument("--step", type=int, default=4, help="tokens per call after the prefill")
    p.add_argument("--old-length", type=int, default=256, help="length of the full old-way stream (0: skip)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the decode models from the shipped files")
    p.add_argument("--build-only", action="store_true",
                   help="rebuild onnx/models/tracking/decode/ (block and dense) from the shipped files and exit")
    p.add_argument("--reference", type=int, default=None,
                   help="build the decode model in memory with this R of (j − R)/8 (default: the saved one, R = 0)")
    p.add_argument("--no-f64", action="store_true", help="skip the float64 PyTorch reference (needs torch)")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    if a.build_only:
        for path in write_decode_models():
            print(f"wrote {path} ({path.stat().st_size / 2**20:.2f} MiB)")
        return
    seed = a.seed if a.seed is not None else int(time.time_ns() % (1 << 32))
    manifest = json.loads((MODELS / "manifest.json").read_text())
    task = Task(**{k: manifest[k] for k in ("boxes", "objects", "p_move", "p_shift", "p_ask")})
    import onnxruntime as ort

    print(f"# onnxruntime {ort.__version__} CPU, intra-op threads {a.threads or 'all'}, batch {a.batch}, "
          f"data seed {seed}")
    rows = []
    header = (f"{'model':6s} {'mode':16s} {'n':>5s} {'seqs':>4s} {'ms/token':>9s} {'p90':>7s} {'tokens/s':>9s} "
              f"{'query acc':>10s} {'asks':>5s} {'Δ vs full':>9s} {'Δ f64':>7s} {'full f64':>8s} "
              f"{'old ms/token':>12s} {'speed-up':>8s}")
    f64 = None
    if not a.no_f64:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("# torch not installed: no float64 reference (--no-f64 to silence)")
            a.no_f64 = True

    def show(row):
        print(row, flush=True)
        rows.append(row)

    for kind in a.kinds:
        path = decode_model(kind, rebuild=a.rebuild)
        dsess = session(path if a.reference is None else build_decode_model(kind, reference=a.reference), a.threads)
        full = session(MODELS / f"tracking_{kind}.onnx", a.threads)
        print(f"# {kind}: {path.relative_to(HERE.parents[1])} ({path.stat().st_size / 2**20:.2f} MiB), "
              f"reference R = {decode_meta(dsess)['reference']}", flush=True)
        if not a.no_f64:
            f64 = shipped_torch_model(kind)
        print(header, flush=True)
        for li, n in enumerate(a.lengths):
            count = a.sequences or (4 if n <= 256 else 2 if n <= 1024 else 1)
            count = max(a.batch, (count + a.batch - 1) // a.batch * a.batch)
            data = generate(task, count, n, seed=seed + 7919 * li)
            # The old way: one full run on n tokens is the cost of one token at context n.
            old = []
            for _ in range(3 if n <= 1024 else 1):
                t0 = time.perf_counter()
                full.run(None, {"tokens": data.tokens[: a.batch]})
                old.append(time.perf_counter() - t0)
            old_ms = 1e3 * float(np.median(old))
            exact, fulls = {}, {}
            for mode, prefill, step in (("token by token", 0, 1), (f"prefill {n // 2}+{a.step}s", n // 2, a.step)):
                times, diffs, d64, f64d, answers, pre = [], [], [], [], [], []
                for i in range(0, count, a.batch):
                    part = data.tokens[i : i + a.batch]
                    st = Stream(dsess, a.batch, n)
                    ptrs = st.data_ptrs()

                    def progress(lo, n_, t, i=i):
                        print(f"#   {kind} {mode} n={n} seq {i + 1}/{count}: {lo}/{n_} tokens, "
                              f"{1e3 * np.median(t) / step:.3f} ms/token", flush=True)

                    logits, t, tp, ans = stream_tokens(st, part, data.ask_mask[i : i + a.batch],
                                                       prefill, step, progress)
                    assert st.data_ptrs() == ptrs, "state buffers moved"
                    if i not in fulls:
                        (fulls[i],) = full.run(None, {"tokens": part})
                        if f64 is not None:
                            exact[i] = reference_logits(f64, part)
                    diffs.append(rel_diff(logits, fulls[i]))
                    if f64 is not None:
                        d64.append(rel_diff(logits, exact[i]))
                        f64d.append(rel_diff(fulls[i], exact[i]))
                    times.append(t / step)
                    pre.append(tp)
                    answers.append(ans)
                t = np.concatenate(times)
                acc, asks = accuracy(np.concatenate(answers), data)
                ms = 1e3 * float(np.median(t))
                show(f"{kind:6s} {mode:16s} {n:5d} {count:4d} {ms:9.3f} {1e3 * np.quantile(t, 0.9):7.3f} "
                     f"{a.batch * 1e3 / ms:9.0f} {100 * acc:9.2f}% {asks:5d} {max(diffs):9.1e} "
                     f"{max(d64) if d64 else float('nan'):7.1e} {max(f64d) if f64d else float('nan'):8.1e} "
                     f"{old_ms:12.2f} {old_ms / ms:7.1f}×")
                if prefill:
                    print(f"#   prefill of {prefill} tokens: {1e3 * np.median(pre):.2f} ms per call", flush=True)
        if a.old_length:
            # The old way in full: re-run the shipped model on the prefix for every token.
            n = a.old_length
            data = generate(task, a.batch, n, seed=seed + 1)
            tokens = data.tokens
            ans = np.full(tokens.shape, -1, np.int64)
            t = []
            last_logits = np.zeros((a.batch, n, manifest["boxes"]), np.float32)
            for j in range(n):
                t0 = time.perf_counter()
                (out,) = full.run(None, {"tokens": tokens[:, : j + 1]})
                t.append(time.perf_counter() - t0)
                last_logits[:, j] = out[:, -1]
            m = data.ask_mask
            ans[m] = last_logits.argmax(-1)[m]
            acc, asks = accuracy(ans, data)
            st = Stream(dsess, a.batch, n)
            logits, ts, _, sans = stream_tokens(st, tokens, m)
            sacc, _ = accuracy(sans, data)
            old_ms, new_ms = 1e3 * float(np.mean(t)), 1e3 * float(np.mean(ts))
            show(f"{kind:6s} {'old way (full)':16s} {n:5d} {a.batch:4d} {old_ms:9.3f} "
                 f"{1e3 * np.quantile(t, 0.9):7.3f} {a.batch * 1e3 / old_ms:9.0f} {100 * acc:9.2f}% {asks:5d} "
                 f"{rel_diff(logits, last_logits):9.1e}")
            print(f"#   old way at n = {n}: mean {old_ms:.2f} ms/token (whole stream {sum(t):.2f} s) vs the cache "
                  f"{new_ms:.3f} ms/token ({sum(ts):.2f} s): {old_ms / new_ms:.1f}× per token; streamed "
                  f"answers {100 * sacc:.2f}%; its Δ: streamed vs old-way last-row logits", flush=True)
    print("\n" + header)
    print("\n".join(rows))
    print("# ms/token: median time of a call over its tokens (p90: 90th percentile); tokens/s = batch/ms per token.\n"
          "# Δ vs full: max |streamed logits − shipped full-sequence model's logits| / max |logit|, same tokens;\n"
          "# Δ f64: streamed vs the shipped weights in float64 PyTorch; full f64: the shipped full model vs the same\n"
          "# (float32's own error). old ms/token: one run of the shipped model on n tokens = the old way's cost of a\n"
          "# token at context n; speed-up = old ms/token / ms/token.")


if __name__ == "__main__":
    main()
