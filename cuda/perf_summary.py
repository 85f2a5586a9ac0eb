#!/usr/bin/env python3
"""The short tables printed at the end of cuda/perf_run.sh, from the logs in OUT.

    python3 cuda/perf_summary.py OUT

1. Median ms per (mode, n, b) for every gpu_bench run of the call (base1, current,
   current2, pdl, base2), with one SDPA hop of the same call beside them.
2. Per kernel of one profiled call (Nsight Compute): µs, grid, registers, warps
   active, instructions, DRAM bytes; this build and BASE where both were profiled.
3. The causal local kernel at 32768: stall reasons, then the SASS lines with the most
   stall samples.
"""
import csv
import gzip
import pathlib
import re
import sys
from collections import OrderedDict, defaultdict


def bench_rows(path):
    """{(mode, n, b): median ms} from one gpu_bench log (several runs may be appended)."""
    out, mode = {}, "?"
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"blockres block, (\w+)", line)
        if m:
            mode = m.group(1)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0].isdigit():
            b = cells[1].replace(" fixed", "").replace("  ", " ")
            try:
                out[(mode, int(cells[0]), b)] = float(cells[3])
            except ValueError:
                pass
    return out


def sdpa(path):
    """{n: (causal d64, non-causal d64)} from cuda/bench_torch.py --sdpa."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            try:
                out[int(cells[0])] = (float(cells[1]), float(cells[2]))
            except ValueError:
                pass
    return out


def timings(out):
    runs = ("base1", "current", "current1", "current2", "pdl", "base2", "alt1", "alt2", "fused1", "unfused1",
            "fused2", "unfused2")
    runs = [r for r in runs if (out / f"{r}.txt").exists()]
    data = {r: bench_rows(out / f"{r}.txt") for r in runs}
    sd = sdpa(out / "sdpa.txt")
    keys = sorted({k for d in data.values() for k in d}, key=lambda k: (k[0], k[1], k[2]))
    print("\n| mode | n | b | " + " | ".join(runs) + " | SDPA hop | current vs SDPA |")
    print("|:--|--:|:--|" + "--:|" * len(runs) + "--:|--:|")
    for k in keys:
        vals = [data[r].get(k) for r in runs]
        hop = sd.get(k[1], (None, None))[0 if k[0] == "causal" else 1]
        cur = data.get("current", data.get("current1", data.get("fused1", {}))).get(k)
        ratio = f"{hop / cur:.2f}x" if hop and cur else ""
        cells = [f"{v:.3f}" if v is not None else "" for v in vals]
        print(f"| {k[0]} | {k[1]} | {k[2]} | " + " | ".join(cells) + f" | {hop or ''} | {ratio} |")
    for name in ("causal_blocks", "d128", "d128_base", "d128_blocks", "d128_blocks_base", "bidir_d128",
                 "blocks96_d64", "blocks96_d128", "auto_d64", "auto_d128", "fused_d128", "unfused_d128"):
        rows = bench_rows(out / f"{name}.txt")
        if rows:
            print(f"{name}: " + ", ".join(f"{k[1]} b={k[2]}: {v:.3f}" for k, v in rows.items()))


def ncu_table(path):
    """OrderedDict kernel → {metric: [values per launch]} from an ncu --csv log."""
    if not path.exists():
        return None
    rows = [r for r in csv.reader(path.read_text(errors="replace").splitlines()) if len(r) > 10]
    if not rows:
        return None
    h = rows[0]
    k, mn, mv, mu = (h.index(x) for x in ("Kernel Name", "Metric Name", "Metric Value", "Metric Unit"))
    idx = h.index("ID") if "ID" in h else None
    t = OrderedDict()
    for r in rows[1:]:
        name = r[k].split("(")[0]
        key = (r[idx] if idx is not None else "", name)
        val = float(r[mv].replace(",", "")) if re.match(r"^[\d.,]+$", r[mv]) else r[mv]
        unit = r[mu]
        if r[mn] == "gpu__time_duration.sum":
            val *= {"ns": 1e-3, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(unit, 1.0)
        if r[mn] == "dram__bytes.sum":
            scale = {"byte": 1e-6, "Kbyte": 1e-3, "Mbyte": 1.0, "Gbyte": 1e3}.get(unit, 1.0)
            val = val * scale
        t.setdefault(key, {})[r[mn]] = val
    return t


def kernels(out):
    names = ["causal_4096", "causal_32768", "causal_32768_base", "bidir_16384", "bidir_16384_base",
             "fused_4096"]
    names += sorted(p.stem[4:] for p in out.glob("ncu_d128_32768_*.csv"))
    names += sorted(p.stem[4:] for p in out.glob("ncu_4096_*.csv"))
    names += sorted(p.stem[4:] for p in out.glob("ncu_32768_*.csv"))
    for name in names:
        t = ncu_table(out / f"ncu_{name}.csv")
        if t is None:
            continue
        agg = OrderedDict()
        for (_, kname), m in t.items():
            a = agg.setdefault(kname, defaultdict(float))
            a["launches"] += 1
            for key in ("gpu__time_duration.sum", "smsp__inst_executed.sum", "dram__bytes.sum"):
                v = m.get(key)
                a[key] += v if isinstance(v, float) else 0.0
            for key in ("launch__grid_size", "launch__registers_per_thread",
                        "sm__warps_active.avg.pct_of_peak_sustained_active"):
                v = m.get(key)
                a[key] = v if isinstance(v, float) else 0.0
        total = sum(a["gpu__time_duration.sum"] for a in agg.values())
        print(f"\nncu {name} (sum {total:.1f} µs)")
        print("| kernel | launches | µs | grid | regs | warps active % | Minst | DRAM MB |")
        print("|:--|--:|--:|--:|--:|--:|--:|--:|")
        for kname, a in agg.items():
            print(f"| {kname} | {a['launches']:.0f} | {a['gpu__time_duration.sum']:.1f} | "
                  f"{a['launch__grid_size']:.0f} | {a['launch__registers_per_thread']:.0f} | "
                  f"{a['sm__warps_active.avg.pct_of_peak_sustained_active']:.0f} | "
                  f"{a['smsp__inst_executed.sum'] / 1e6:.2f} | {a['dram__bytes.sum']:.1f} |")


def stalls(out, n="32768", tag=""):
    p = out / f"ncu_local_tc{tag}_stalls.txt"
    if p.exists():
        keep = re.compile(r"Stall|Eligible|Issued|Active Warps|Occupancy|Executed Instructions |"
                          r"Warp Cycles Per Issued|Registers")
        lines = [l.rstrip() for l in p.read_text(errors="replace").splitlines() if keep.search(l)]
        print(f"\nlocal_tc at {n}, Nsight Compute sections:")
        for l in lines[:40]:
            print("  " + re.sub(r"\s{2,}", "  ", l.strip()))
    p = out / f"ncu_local_tc{tag}_sass.csv.gz"
    if not p.exists():
        return
    rows = list(csv.reader(gzip.open(p, "rt", errors="replace")))
    head = next((i for i, r in enumerate(rows) if "Source" in r), None)
    if head is None:
        print("sass page: no header found")
        return
    h = rows[head]
    col = next((i for i, x in enumerate(h) if x.startswith("Warp Stall Sampling (All")), None)
    src = h.index("Source")
    if col is None:
        print("sass page columns: " + ", ".join(h[:30]))
        return
    body = [r for r in rows[head + 1:] if len(r) > col]
    def num(x):
        try:
            return float(x.replace(",", ""))
        except ValueError:
            return 0.0
    total = sum(num(r[col]) for r in body) or 1.0
    print(f"\nlocal_tc at {n}, SASS lines by stall samples ({len(body)} lines, {total:.0f} samples):")
    for r in sorted(body, key=lambda r: -num(r[col]))[:25]:
        print(f"  {100 * num(r[col]) / total:5.1f}%  {r[0]:>6}  {r[src][:90]}")


def main():
    out = pathlib.Path(sys.argv[1])
    timings(out)
    kernels(out)
    stalls(out)
    stalls(out, "4096", "_4096")


if __name__ == "__main__":
    main()
