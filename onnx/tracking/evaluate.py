#!/usr/bin/env python3
"""The main job: the shipped tracking models (onnx/models/tracking) in onnxruntime on CPU.

For each model and length (training length, 4×, 16×) it generates fresh sequences from
manifest.json's task (TRACKING.md), runs them through onnxruntime with the blockres
library registered, and prints query accuracy, sequence exact match, the accuracy on
multi-hop queries (the asked object was moved by a SHIFT since its last PUT/MOVE) and
the median time per batch. It also runs the dense ChaCAL model with its nodes switched
to ``structure = block`` (the block model's block size and coarse query): what a user
converting a trained dense model would get without retraining.

    .venv/bin/python onnx/tracking/evaluate.py [--seed S] [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import blockres_onnx as br  # noqa: E402
from blockres_onnx.tracking import Task, generate, score  # noqa: E402

MODELS = HERE.parent / "models" / "tracking"
# (length multiple, sequences, sequences per batch): about 4,500 queries per cell.
PLAN = [(1, 128, 32), (4, 32, 8), (16, 8, 2)]
QUICK = [(1, 32, 16), (4, 8, 4), (16, 2, 1)]


def swap_structure(path: Path, **attrs) -> bytes:
    """The model at ``path`` with attributes of every blockres node replaced."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.domain != br.DOMAIN:
            continue
        keep = [a for a in node.attribute if a.name not in attrs]
        del node.attribute[:]
        node.attribute.extend(keep)
        node.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in attrs.items())
    return model.SerializeToString()


def session(model, threads: int):
    import onnxruntime as ort

    so = br.register(ort.SessionOptions())
    if threads:
        so.intra_op_num_threads = threads
    data = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_cell(sess, task, n, count, per_batch, seed):
    batch = generate(task, count, n, seed=seed)
    logits, times = [], []
    for i in range(0, count, per_batch):
        tokens = batch.tokens[i : i + per_batch]
        t0 = time.perf_counter()
        (out,) = sess.run(None, {"tokens": tokens})
        times.append(time.perf_counter() - t0)
        if not np.isfinite(out).all():
            raise SystemExit(f"non-finite logits at n = {n}")
        logits.append(out)
    res = score(np.concatenate(logits), batch)
    res["ms_per_batch"] = 1e3 * float(np.median(times))
    res["batch"] = per_batch
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=None, help="data seed (default: fresh, printed)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--quick", action="store_true", help="fewer sequences (a smoke run)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    p.add_argument("--models", type=Path, default=MODELS)
    a = p.parse_args()
    manifest = json.loads((a.models / "manifest.json").read_text())
    task = Task(**{k: manifest[k] for k in ("boxes", "objects", "p_move", "p_shift", "p_ask")})
    n0 = manifest["train_length"]
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    block_cfg = manifest["model_configs"]["block"]
    swap = {"structure": "block", "block_size": int(block_cfg["block_size"]),
            "coarse_query": block_cfg["coarse_query"]}
    rows = [(kind, a.models / manifest["models"][kind]) for kind in ("block", "dense", "softmax")]
    rows.append(("dense→block", swap_structure(a.models / manifest["models"]["dense"], **swap)))
    plan = QUICK if a.quick else PLAN
    print(f"task {task.as_dict()}, training length {n0}; data seed {seed}; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})", flush=True)
    print(f"{'model':12s} {'n':>6s} {'query acc':>10s} {'multi-hop':>10s} {'exact match':>12s} "
          f"{'ms/batch':>10s} {'batch':>6s}", flush=True)
    results = []
    for kind, model in rows:
        sess = session(model, a.threads)
        for mult, count, per_batch in plan:
            n = mult * n0
            t0 = time.perf_counter()
            r = run_cell(sess, task, n, count, per_batch, seed + mult)
            r.update(model=kind, n=n, mult=mult, wall_s=time.perf_counter() - t0)
            results.append(r)
            print(f"{kind:12s} {n:6d} {100 * r['query_accuracy']:9.2f}% {100 * r['multi_hop_accuracy']:9.2f}% "
                  f"{100 * r['exact_match']:11.2f}% {r['ms_per_batch']:10.1f} {per_batch:6d}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"seed": seed, "task": task.as_dict(), "train_length": n0,
                                      "cpus": os.cpu_count(), "results": results}, indent=1) + "\n")
    by = {(r["model"], r["mult"]): r for r in results}
    t_block, t_dense = by[("block", 16)]["ms_per_batch"], by[("dense", 16)]["ms_per_batch"]
    t_soft = by[("softmax", 16)]["ms_per_batch"]
    print(f"\nat 16× ({16 * n0} tokens): block {t_block:.1f} ms, dense {t_dense:.1f} ms "
          f"({t_dense / t_block:.2f}× block), softmax Transformer {t_soft:.1f} ms ({t_soft / t_block:.2f}× block)")


if __name__ == "__main__":
    main()
