#!/usr/bin/env python3
"""Plot evaluate.py's JSON: query accuracy and time per sequence vs length, one line
per model, as a self-contained SVG (no plotting library needed).

    python onnx/tracking/plot.py results.json docs/tracking.svg
"""
from __future__ import annotations

import json
import math
import sys

COLORS = {"block": "#d62728", "dense": "#1f77b4", "softmax": "#2ca02c", "dense→block": "#9467bd"}
W, H, PAD = 360, 260, 52


def panel(x0, title, series, ylog, ylabel, yfmt):
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts]
    lo, hi = min(ys), max(ys)
    if ylog:
        lo, hi = math.log10(lo) - 0.1, math.log10(hi) + 0.1
    else:
        lo, hi = max(0.0, lo - 0.05), min(1.0, hi + 0.02)
    fx = lambda x: x0 + PAD + (math.log2(x) - math.log2(xs[0])) / max(math.log2(xs[-1] / xs[0]), 1e-9) * (W - PAD - 16)
    fy = lambda y: 24 + (1 - ((math.log10(y) if ylog else y) - lo) / (hi - lo)) * (H - 24 - PAD)
    out = [f'<text x="{x0 + W / 2}" y="15" text-anchor="middle" font-size="13">{title}</text>',
           f'<rect x="{x0 + PAD}" y="24" width="{W - PAD - 16}" height="{H - 24 - PAD}" fill="none" stroke="#999"/>']
    for x in xs:
        out.append(f'<text x="{fx(x):.1f}" y="{H - PAD + 16}" text-anchor="middle" font-size="11">{x}</text>')
    ticks = ([10**e for e in range(math.floor(lo), math.ceil(hi) + 1) if lo <= e <= hi] if ylog
             else [t / 10 for t in range(11) if lo <= t / 10 <= hi])
    for t in ticks:
        out.append(f'<text x="{x0 + PAD - 4}" y="{fy(t) + 4:.1f}" text-anchor="end" font-size="11">{yfmt(t)}</text>')
        out.append(f'<line x1="{x0 + PAD}" x2="{x0 + W - 16}" y1="{fy(t):.1f}" y2="{fy(t):.1f}" stroke="#eee"/>')
    out.append(f'<text x="{x0 + W / 2 + 18}" y="{H - 12}" text-anchor="middle" font-size="11">sequence length n</text>')
    out.append(f'<text x="{x0 + 12}" y="{(H - PAD) / 2 + 12}" font-size="11" transform="rotate(-90 {x0 + 12} {(H - PAD) / 2 + 12})" text-anchor="middle">{ylabel}</text>')
    for name, pts in series.items():
        path = " ".join(f"{fx(x):.1f},{fy(y):.1f}" for x, y in sorted(pts))
        c = COLORS.get(name, "#555")
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        out += [f'<circle cx="{fx(x):.1f}" cy="{fy(y):.1f}" r="3" fill="{c}"/>' for x, y in pts]
    return out


def main():
    data = json.load(open(sys.argv[1]))
    acc, ms = {}, {}
    for r in data["results"]:
        acc.setdefault(r["model"], []).append((r["n"], r["query_accuracy"]))
        ms.setdefault(r["model"], []).append((r["n"], r["ms_per_batch"] / r["batch"]))
    body = panel(0, "query accuracy (onnxruntime, CPU)", acc, False, "query accuracy", lambda t: f"{t:.1f}")
    body += panel(W, "time per sequence", ms, True, "ms per sequence", lambda t: f"{t:g}")
    for i, name in enumerate(acc):
        x = 60 + i * 150
        body.append(f'<rect x="{x}" y="{H + 4}" width="12" height="12" fill="{COLORS.get(name, "#555")}"/>')
        body.append(f'<text x="{x + 16}" y="{H + 14}" font-size="12">{name}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 24}" '
           f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")
    open(sys.argv[2], "w").write(svg)


if __name__ == "__main__":
    main()
