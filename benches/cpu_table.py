"""One-run driver for the CPU benchmark table of issue 2 (BENCHMARKS.md).

Times blockres (examples/bench_head.rs, a subprocess per configuration) and the numpy
peer (benches/peer.py, also a subprocess, on the very inputs blockres saved) for
n = 2^10 … 2^20, d = 64, f32, causal, one head, γ = 0.5, synthetic segmented inputs;
then the thread-scaling and half-precision checks, the exponent fit and the bars.

    .venv/bin/python benches/cpu_table.py [--threads 2] [--json-out results.json]

Prints a markdown table and the bars check to stdout, progress to stderr. Runs that
would take too long (an estimate from the previous n, scaled by the method's
complexity) or need too much memory are shown as "—" with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "target", "release", "examples", "bench_head")
D = 64
GIB = 1 << 30
RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=True)\n"
    "print(r.stdout.strip())\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_head(args, timeout=900):
    t0 = time.perf_counter()
    out = subprocess.run(
        [BIN] + [str(a) for a in args], capture_output=True, text=True, timeout=timeout
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench_head {' '.join(map(str, args))}: {out.stderr.strip()}")
    recs = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
    log(f"bench_head {' '.join(map(str, args))}: {time.perf_counter() - t0:.1f} s wall")
    return recs


def numpy_peer(folder, structure, reps, warmup, timeout=900):
    """The peer's median time, with its BLAS on one thread and on every core, keeping
    the faster: OpenBLAS's threads cost more than they gain on the peer's many small
    block products (several times slower on a busy machine), while they help the
    large dense products. Either is what a user could pick, so the peer gets the best."""
    best = None
    tried = {}
    for bt in sorted({1, os.cpu_count() or 1}):
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(bt)
        t0 = time.perf_counter()
        # A setting that takes several times the first one's wall time cannot win;
        # stop it rather than spend the driver's budget on it.
        limit = timeout if best is None else max(30.0, 4 * best["wall"])
        try:
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "peer.py"), folder, "--structure",
                 structure, "--reps", str(reps), "--warmup", str(warmup)],
                capture_output=True, text=True, timeout=limit, env=env,
            )
        except subprocess.TimeoutExpired:
            tried[bt] = f"stopped after {limit:.0f} s"
            log(f"numpy {structure} {folder} (BLAS threads {bt}): stopped after {limit:.0f} s")
            continue
        if out.returncode != 0:
            raise RuntimeError(f"peer.py {structure} {folder}: {out.stderr.strip()[-2000:]}")
        rec = json.loads(out.stdout.splitlines()[-1])
        rec["blas_threads"] = bt
        rec["wall"] = time.perf_counter() - t0
        tried[bt] = rec["seconds"]
        log(f"numpy {structure} {folder} (BLAS threads {bt}): "
            f"{time.perf_counter() - t0:.1f} s wall, median {rec['seconds']:.4f} s")
        if best is None or rec["seconds"] < best["seconds"]:
            best = rec
    best["seconds_by_blas_threads"] = tried
    return best


def reps_for(seconds_estimate):
    """More repetitions where a run is short, so the median means something."""
    if seconds_estimate < 0.05:
        return 7, 1
    if seconds_estimate < 1.0:
        return 5, 1
    if seconds_estimate < 5.0:
        return 3, 1
    return 1, 0


def fmt_s(x):
    if x is None:
        return "—"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 1:
        return f"{x:.2f}"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.0f} µs"


def np_cell(rec):
    if rec is None:
        return "—"
    return f"{fmt_s(rec['seconds'])} ({rec['blas_threads']}t)"


def fmt_ratio(a, b):
    return f"{a / b:.1f}×" if a and b else "—"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="blockres threads for the main table (default: all cores)")
    ap.add_argument("--max-log2", type=int, default=20)
    ap.add_argument("--dense-limit-s", type=float, default=60.0,
                    help="skip a dense run whose estimated time exceeds this")
    ap.add_argument("--numpy-dense-max-n", type=int, default=16384,
                    help="largest n for numpy dense (it holds n×n f32 matrices)")
    ap.add_argument("--numpy-limit-s", type=float, default=120.0)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json-out", default=None, help="write every raw record here")
    a = ap.parse_args()
    t_start = time.perf_counter()

    if not a.no_build:
        log("cargo build --release --example bench_head")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--example", "bench_head"],
                       cwd=ROOT, check=True)
    th = a.threads
    work = tempfile.mkdtemp(prefix="blockres-bench-")
    raw = {"threads": th, "machine": platform.machine(), "cpus": os.cpu_count(),
           "rows": {}, "notes": []}
    try:
        ns = [1 << e for e in range(10, a.max_log2 + 1)]
        rows = raw["rows"]

        # Peak memory at the largest n, in a process that does nothing else (no
        # saving of inputs): VmHWM as the process saw it, and getrusage from a
        # fresh parent whose only child it is (ours has waited for cargo).
        nmax = ns[-1]
        args = ["--n", nmax, "--structure", "block", "--threads", th, "--reps", 3,
                "--warmup", 1]
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", RSS_WRAPPER, BIN] + [str(x) for x in args],
            capture_output=True, text=True, timeout=900, check=True,
        )
        lines = out.stdout.splitlines()
        rec = json.loads(lines[0])
        ru = int(lines[-1])
        log(f"bench_head {' '.join(map(str, args))} (RSS): {time.perf_counter() - t0:.1f} s wall")
        raw["rss"] = {"n": nmax, "vmhwm": rec["peak_rss_bytes"], "ru_maxrss_children": ru}
        rows[nmax] = {"block": rec}

        # blockres block over every n (timing runs without --save), then saved
        # inputs for the numpy peer.
        block_prev = None
        dense_prev = None
        npd_prev = None
        npb_prev = None
        for n in ns:
            row = rows.setdefault(n, {})
            if "block" not in row:
                est = block_prev[1] * (n / block_prev[0]) ** (4 / 3) if block_prev else 1e-3
                reps, warm = reps_for(est)
                row["block"] = bench_head(["--n", n, "--structure", "block", "--threads", th,
                                           "--reps", reps, "--warmup", warm])[0]
            block_prev = (n, row["block"]["seconds"])
            b = row["block"]["b"]
            folder = os.path.join(work, str(n))

            # blockres dense: O(n²d) time, O(n·panel) memory; estimate from the
            # previous n.
            est = dense_prev[1] * (n / dense_prev[0]) ** 2 if dense_prev else 0.01
            if est > a.dense_limit_s:
                row["dense_skip"] = f"est. {est:.0f} s > {a.dense_limit_s:.0f} s"
            else:
                reps, warm = reps_for(est)
                rec = bench_head(["--n", n, "--structure", "dense", "--threads", th,
                                  "--reps", reps, "--warmup", warm, "--save", folder])[0]
                row["dense"] = rec
                dense_prev = (n, rec["seconds"])

            # Inputs (and blockres's block output) for the peer.
            bench_head(["--n", n, "--structure", "block", "--threads", th, "--reps", 1,
                        "--warmup", 0, "--save", folder])
            yb = np.load(os.path.join(folder, "y_block.npy"))
            if os.path.exists(os.path.join(folder, "y_dense.npy")):
                yd = np.load(os.path.join(folder, "y_dense.npy"))
                row["rel_block_vs_dense"] = float(
                    np.linalg.norm((yb - yd).astype(np.float64)) / np.linalg.norm(yd.astype(np.float64)))
                del yd
            del yb

            if n > a.numpy_dense_max_n:
                gib = n * n * 4 / GIB
                row["numpy_dense_skip"] = f"n×n f32 = {gib:.0f} GiB per copy"
            else:
                est = npd_prev[1] * (n / npd_prev[0]) ** 2 if npd_prev else 0.05
                if est > a.numpy_limit_s:
                    row["numpy_dense_skip"] = f"est. {est:.0f} s > {a.numpy_limit_s:.0f} s"
                else:
                    reps, warm = reps_for(est)
                    row["numpy_dense"] = numpy_peer(folder, "dense", reps, warm)
                    npd_prev = (n, row["numpy_dense"]["seconds"])

            est = npb_prev[1] * (n / npb_prev[0]) ** (4 / 3) if npb_prev else 0.05
            if est > a.numpy_limit_s:
                row["numpy_block_skip"] = f"est. {est:.0f} s > {a.numpy_limit_s:.0f} s"
            else:
                reps, warm = reps_for(est)
                row["numpy_block"] = numpy_peer(folder, "block", reps, warm)
                npb_prev = (n, row["numpy_block"]["seconds"])
            shutil.rmtree(folder, ignore_errors=True)

        # Thread scaling: B = 1, H = 16, n = 8192, block.
        scal = {}
        for t in (1, 2):
            scal[t] = bench_head(["--n", 8192, "--heads", 16, "--structure", "block",
                                  "--threads", t, "--reps", 5, "--warmup", 1])[0]
        raw["threads_scaling"] = scal

        # Half precision at n = 65536.
        half = {}
        for dt in ("f32", "f16", "bf16"):
            half[dt] = bench_head(["--n", 65536, "--structure", "block", "--threads", th,
                                   "--dtype", dt, "--reps", 7, "--warmup", 1])[0]
        raw["half"] = half
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # Exponent of blockres block time in n over 2^12 … 2^max.
    fit_n = [n for n in ns if n >= 1 << 12]
    x = np.log([float(n) for n in fit_n])
    y = np.log([rows[n]["block"]["seconds"] for n in fit_n])
    slope = float(np.polyfit(x, y, 1)[0]) if len(fit_n) >= 2 else None
    raw["exponent"] = slope
    raw["driver_seconds"] = time.perf_counter() - t_start

    # The table.
    print(f"CPU, {platform.machine()}, {os.cpu_count()} cores; blockres threads = {th}; "
          f"d = {D}, f32, causal, one head, γ = 0.5; median times in s unless marked; "
          "numpy: the faster of BLAS on 1 thread or all cores (shown as 1t/2t).")
    print()
    print("| n | b | blockres dense | blockres block | numpy dense | numpy block "
          "| dense / block | numpy block / block | numpy dense / blockres dense "
          "| rel. diff block vs dense |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for n in ns:
        r = rows[n]
        tb = r["block"]["seconds"]
        td = r.get("dense", {}).get("seconds")
        tnd = r.get("numpy_dense", {}).get("seconds")
        tnb = r.get("numpy_block", {}).get("seconds")
        for val, key in ((td, "dense_skip"), (tnd, "numpy_dense_skip"),
                         (tnb, "numpy_block_skip")):
            if val is None and key in r:
                notes.append(f"n = {n}, {key.removesuffix('_skip').replace('_', ' ')}: "
                             f"skipped, {r[key]}")
        cells = [fmt_s(td), np_cell(r.get("numpy_dense")), np_cell(r.get("numpy_block"))]
        rel = r.get("rel_block_vs_dense")
        print(f"| {n} | {r['block']['b']} | {cells[0]} | {fmt_s(tb)} | {cells[1]} | {cells[2]} "
              f"| {fmt_ratio(td, tb)} | {fmt_ratio(tnb, tb)} | {fmt_ratio(tnd, td)} "
              f"| {'—' if rel is None else f'{rel:.2e}'} |")
    print()
    for s in notes:
        print(f"- {s}")
    rss = raw["rss"]
    big = rows[nmax]["block"]
    print(f"- n = {nmax}: first (cold) call {big['first_seconds']:.3f} s, median "
          f"{big['seconds']:.3f} s; peak RSS of the blockres process {rss['vmhwm'] / GIB:.2f} GiB "
          f"(VmHWM; getrusage children: {rss['ru_maxrss_children'] / GIB:.2f} GiB), "
          f"inputs and output alone {4 * nmax * 4 * D / GIB:.2f} GiB")
    print(f"- fitted exponent of blockres block time over n = 2^12 … 2^{a.max_log2}: "
          f"{'—' if slope is None else f'{slope:.3f}'}")
    s1, s2 = raw["threads_scaling"][1]["seconds"], raw["threads_scaling"][2]["seconds"]
    print(f"- B = 1, H = 16, n = 8192, block: 1 thread {s1:.4f} s, 2 threads {s2:.4f} s, "
          f"throughput ×{s1 / s2:.2f}")
    h = raw["half"]
    print(f"- n = 65536, block: f32 {h['f32']['seconds']:.4f} s, f16 {h['f16']['seconds']:.4f} s "
          f"(×{h['f16']['seconds'] / h['f32']['seconds']:.2f}), bf16 "
          f"{h['bf16']['seconds']:.4f} s (×{h['bf16']['seconds'] / h['f32']['seconds']:.2f})")
    print(f"- driver wall time {raw['driver_seconds']:.0f} s")

    def ratio(n, num_key):
        r = rows.get(n, {})
        num = r.get(num_key, {}).get("seconds")
        return num / r["block"]["seconds"] if num and "block" in r else None

    bars = [
        ("block ≥ 10× blockres dense at n = 4096", ratio(4096, "dense"), 10, ">="),
        ("block ≥ 40× blockres dense at n = 16384", ratio(16384, "dense"), 40, ">="),
        ("block ≥ 5× numpy block at n = 4096", ratio(4096, "numpy_block"), 5, ">="),
        ("block ≥ 5× numpy block at n = 65536", ratio(65536, "numpy_block"), 5, ">="),
        (f"n = {nmax} in ≤ 2 s (median)", big["seconds"], 2.0, "<="),
        (f"n = {nmax} in ≤ 2 s (first call)", big["first_seconds"], 2.0, "<="),
        (f"peak RSS at n = {nmax} ≤ 2 GiB", rss["vmhwm"] / GIB, 2.0, "<="),
        ("fitted exponent ≤ 1.45", slope, 1.45, "<="),
        ("2 threads ≥ 1.7× 1-thread throughput (H = 16, n = 8192)", s1 / s2, 1.7, ">="),
        ("f16 ≤ 1.2× f32 time (n = 65536)", h["f16"]["seconds"] / h["f32"]["seconds"], 1.2, "<="),
        ("bf16 ≤ 1.2× f32 time (n = 65536)", h["bf16"]["seconds"] / h["f32"]["seconds"], 1.2, "<="),
    ]
    print()
    print("| bar | measured | target | status |")
    print("|---|---:|---:|---|")
    raw["bars"] = []
    for name, val, target, op in bars:
        ok = val is not None and (val >= target if op == ">=" else val <= target)
        status = "n/a" if val is None else ("PASS" if ok else "FAIL")
        raw["bars"].append({"bar": name, "value": val, "target": target, "status": status})
        print(f"| {name} | {'—' if val is None else f'{val:.3g}'} | {op} {target} | {status} |")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(raw, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
