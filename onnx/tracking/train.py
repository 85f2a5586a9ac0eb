#!/usr/bin/env python3
"""Train one tracking model (TRACKING.md) on freshly generated batches, on a GPU if present.

    python onnx/tracking/train.py --kind block --minutes 4 --out runs/block

Writes OUT/config.json (task + model), OUT/model.pt (final weights) and OUT/log.jsonl
(loss every 50 steps; query accuracy at the training length and at 4× on fixed
held-out batches every --eval-every steps). Seeds fix the weights, the training stream
and the held-out sets.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from blockres_onnx.tracking import Task, generate, score  # noqa: E402
from blockres_onnx.tracking_model import ModelConfig, TrackingModel  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["block", "dense", "softmax"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--max-steps", type=int, default=10**9)
    p.add_argument("--n", type=int, default=256, help="training length")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--coarse-query", default="first", choices=["mean", "first"])
    p.add_argument("--gammas", default="0.5,0.8,0.9,0.95")
    p.add_argument("--fixed-gamma", action="store_true")
    p.add_argument("--slopes", default="0.5,1,2,4")
    p.add_argument("--boxes", type=int, default=4)
    p.add_argument("--objects", type=int, default=8)
    p.add_argument("--p", default="0.45,0.15,0.4", help="p_move,p_shift,p_ask")
    p.add_argument("--min-len", type=int, default=0, help="train on lengths drawn from [min-len, n]")
    p.add_argument("--init", help="start from these weights (model.pt of an earlier run, same model)")
    return p.parse_args()


def evaluate(model, sets, device):
    model.eval()
    out = {}
    with torch.no_grad():
        for name, batch in sets.items():
            logits = []
            for i in range(0, len(batch.tokens), 32):
                t = torch.from_numpy(batch.tokens[i : i + 32]).to(device)
                logits.append(model(t).float().cpu().numpy())
            out[name] = score(np.concatenate(logits), batch)
    model.train()
    return out


def main():
    a = parse()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True
    pm, ps, pa = (float(x) for x in a.p.split(","))
    task = Task(a.boxes, a.objects, pm, ps, pa)
    cfg = ModelConfig(
        kind=a.kind,
        boxes=a.boxes,
        layers=a.layers,
        d_model=a.d_model,
        heads=a.heads,
        block_size=a.block_size,
        coarse_query=a.coarse_query,
        gammas=[float(x) for x in a.gammas.split(",")],
        learn_gamma=not a.fixed_gamma,
        slopes=[float(x) for x in a.slopes.split(",")],
    )
    model = TrackingModel(cfg).to(device)
    if a.init:
        model.load_state_dict(torch.load(a.init, map_location=device))
    params = sum(p.numel() for p in model.parameters())
    meta = {"task": task.as_dict(), "model": cfg.as_dict(), "train": vars(a), "params": params, "device": device}
    if device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    (out / "config.json").write_text(json.dumps(meta, indent=1))
    sets = {
        "train_len": generate(task, 256, a.n, seed=10_000 + a.seed),
        "4x": generate(task, 64, 4 * a.n, seed=20_000 + a.seed),
    }
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = np.random.default_rng(a.seed)
    log = open(out / "log.jsonl", "w")
    t0 = time.time()
    budget = a.minutes * 60
    step = 0
    warm = 200
    while step < a.max_steps:
        frac = min((time.time() - t0) / budget, 1.0)
        if frac >= 1.0:
            break
        lr = a.lr * min(1.0, (step + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        n = a.n if a.min_len <= 0 else int(rng.integers(a.min_len, a.n + 1))
        batch = generate(task, a.batch, n, rng=rng)
        tokens = torch.from_numpy(batch.tokens).to(device)
        target = torch.from_numpy(batch.answers).to(device)
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, a.boxes), target.reshape(-1), ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            rec = {"step": step, "t": round(time.time() - t0, 1), "loss": round(loss.item(), 5), "lr": lr}
            if step % a.eval_every == 0:
                rec["eval"] = evaluate(model, sets, device)
                rec["gammas"] = model.gammas()
                print(json.dumps({"step": step, "t": rec["t"], "loss": rec["loss"],
                                  **{k: round(v["query_accuracy"], 4) for k, v in rec["eval"].items()}}), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
    final = {"step": step, "t": round(time.time() - t0, 1), "final": True, "eval": evaluate(model, sets, device),
             "gammas": model.gammas()}
    log.write(json.dumps(final) + "\n")
    log.close()
    torch.save(model.state_dict(), out / "model.pt")
    print(json.dumps({"final": a.out, "steps": step, **{k: v for k, v in final["eval"].items()}}), flush=True)


if __name__ == "__main__":
    main()
