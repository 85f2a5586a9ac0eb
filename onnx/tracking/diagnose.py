#!/usr/bin/env python3
"""Attention-structure diagnostics of a trained tracking model: capture the Q, K, V
each resolvent node sees on a fresh sequence, save them as .npy (one head at a time,
with that head's γ and scale), run ``blockres-diagnose`` on each and print one line per
head: block-diagonal mass and the block operator's error against the exact resolvent
at b = 16, the block size the block model uses.

    python onnx/tracking/diagnose.py RUN_DIR OUT_DIR [--n 1024]   (torch; cargo build first)
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from blockres_onnx.tracking import Task, generate  # noqa: E402
from blockres_onnx.tracking_model import Attention  # noqa: E402
from export import load  # noqa: E402

ROOT = HERE.parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--blocks", default="8,16,32,64")
    a = p.parse_args()
    model, meta = load(a.run)
    captured = []
    original = Attention._resolvent

    def capture(self, q, k, v, scale):
        captured.append((q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), scale, self.frozen_gamma))
        return original(self, q, k, v, scale)

    Attention._resolvent = capture
    tokens = generate(Task(**meta["task"]), 1, a.n, seed=a.seed).tokens
    with torch.no_grad():
        model(torch.from_numpy(tokens))
    Attention._resolvent = original
    exe = ROOT / "target" / "release" / "blockres-diagnose"
    print(f"{meta['model']['kind']} model {a.run.name}, one sequence of n = {a.n}; per head: γ, "
          f"block-diagonal mass and rel. error of structure=block at b = {a.blocks}")
    for layer, (q, k, v, scale, gammas) in enumerate(captured):
        for h, g in enumerate(gammas):
            d = a.out / f"layer{layer}_head{h}"
            d.mkdir(parents=True, exist_ok=True)
            for name, t in (("q", q), ("k", k), ("v", v)):
                np.save(d / f"{name}.npy", np.ascontiguousarray(t[:, h : h + 1]))
            res = subprocess.run(
                [str(exe), "--dir", str(d), "--gamma", f"{g:.6f}", "--scale", f"{scale:.8f}",
                 "--blocks", a.blocks, "--svg", str(d / "diagnose.svg"), "--threads", "2"],
                capture_output=True, text=True, check=True)
            (d / "diagnose.txt").write_text(res.stdout)
            rows = re.findall(r"^block\s+b=(\d+)\s+([\d.]+)\s+([\d.e+-]+)", res.stdout, re.M)
            support = re.search(r"mean ([\d.]+), max (\d+)", res.stdout)
            cells = "  ".join(f"b={b}: mass {m}, err {e}" for b, m, e in rows)
            print(f"layer {layer} head {h}  γ={g:.3f}  support mean {support.group(1)}  {cells}", flush=True)


if __name__ == "__main__":
    main()
