#!/usr/bin/env python3
"""Where a kernel's executed instructions and stall samples go, by source line.

Nsight Compute's source page (`ncu -i REP --page source --print-source sass --csv`,
what cuda/perf_run.sh saves as ncu_local_tc*_sass.csv.gz) counts per SASS instruction,
but the embedded SASS has no line table. A `--lineinfo` build of the same source gives
the same SASS (line information does not change code generation), so its `nvdisasm -gi`
listing maps the N-th instruction of the kernel to the innermost source line it was
inlined from. This script does that join and prints:

- the share of executed instructions and of stall samples per section: a section starts
  at each source line matching one of the --mark regular expressions (default: the
  kernel family's functions), and
- the source lines with the most stall samples.

    python3 cuda/sass_lines.py SASS_CSV[.gz] FILE.cu KERNEL [--mark REGEX ...] [--range LO:HI] [--top N]

Line numbers are those of FILE.cu with its .cuh includes inlined (compile_ptx.expand).
With --range, an instruction inlined from a helper counts for the line in that range
that called it, e.g. the kernel's own functions, so the sections add up by stage.

Needs NVRTC (cuda/compile_ptx.py) and nvdisasm: NVDISASM, else on PATH, else from the
PyPI wheel nvidia-cuda-nvdisasm (`pip install nvidia-cuda-nvdisasm==13.2.78`). The
source must be the one the profiled binary was built from (git show COMMIT:cuda/X.cu);
a mismatch between the two instruction streams is reported, not hidden.
"""
import argparse
import collections
import csv
import gzip
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compile_ptx  # noqa: E402


def nvdisasm() -> str:
    if os.environ.get("NVDISASM"):
        return os.environ["NVDISASM"]
    found = shutil.which("nvdisasm")
    if found:
        return found
    try:
        import nvidia  # namespace package of the NVIDIA wheels

        for root in nvidia.__path__:
            cand = pathlib.Path(root) / "cu13" / "bin" / "nvdisasm"
            if cand.exists():
                return str(cand)
    except ImportError:
        pass
    sys.exit("nvdisasm not found: set NVDISASM or pip install nvidia-cuda-nvdisasm==13.2.78")


def listing(cu: pathlib.Path, kernel: str, lo: int, hi: int):
    """[(source line or None, instruction text)] of `kernel`, and the source. The line is
    the innermost of the instruction's inlining chain that lies in [lo, hi), else the
    innermost."""
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, str(HERE / "compile_ptx.py"), "--lineinfo", "--cubin", tmp, str(cu)],
                           capture_output=True, text=True)
        if r.returncode:
            sys.exit(r.stdout + r.stderr)
        cubin = pathlib.Path(tmp) / (cu.stem + ".cubin")
        text = subprocess.run([nvdisasm(), "-gi", str(cubin)], capture_output=True, text=True,
                              check=True).stdout
    source = compile_ptx.expand(cu).splitlines()
    ins, pending, cur, inside = [], [], None, False
    for line in text.splitlines():
        if line.strip().startswith(".section") and ".text." in line:
            inside = line.split(".text.")[1].split(",")[0] == kernel
            continue
        if not inside:
            continue
        m = re.match(r'\s*//## File "[^"]*", line (\d+)', line)
        if m:
            pending.append(int(m.group(1)))
            continue
        m = re.match(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if m:
            if pending:
                inside_range = [x for x in pending if lo <= x < hi]
                cur = inside_range[0] if inside_range else pending[0]
                pending = []
            ins.append((cur, m.group(2)))
    if not ins:
        sys.exit(f"kernel {kernel} not found in {cu}")
    return ins, source


def opcode(text: str) -> str:
    parts = text.split()
    op = parts[1] if parts[0].startswith("@") else parts[0]
    return op.split(".")[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("cu", type=pathlib.Path)
    ap.add_argument("kernel")
    ap.add_argument("--mark", action="append", default=[],
                    help="regex: a source line matching it starts a section (repeatable)")
    ap.add_argument("--range", default="",
                    help="LO:HI, the source lines (of the expanded file) whose code is charged "
                         "for what helpers inlined into it execute")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.range.split(":")) if a.range else (0, 1 << 30)
    ins, source = listing(a.cu, a.kernel, lo, hi)
    opener = gzip.open if a.csv.endswith(".gz") else open
    rows = list(csv.reader(opener(a.csv, "rt", errors="replace")))
    head = next(i for i, r in enumerate(rows) if "Source" in r)
    h = rows[head]
    data = [r for r in rows[head + 1:] if len(r) > 5]
    col_src, col_ins = h.index("Source"), h.index("Instructions Executed")
    col_smp = next(i for i, x in enumerate(h) if x.startswith("Warp Stall Sampling (All"))
    if len(data) != len(ins):
        sys.exit(f"{len(data)} profiled instructions against {len(ins)} in the build: not the same source?")
    bad = sum(opcode(t) != opcode(r[col_src]) for (_, t), r in zip(ins, data))
    if bad:
        sys.exit(f"{bad} instructions differ between the profile and the build: not the same source?")
    marks = [re.compile(x) for x in (a.mark or [r"^(template|__device__|extern \"C\"|#define)"])]
    starts = [(i + 1, source[i].strip()[:60]) for i, l in enumerate(source) if any(m.search(l) for m in marks)]

    def num(x):
        try:
            return float(x.replace(",", ""))
        except ValueError:
            return 0.0

    def section(ln):
        name = "(no line)"
        for s, text in starts:
            if ln is not None and ln >= s:
                name = f"L{s} {text}"
        return name

    sec_i, sec_s = collections.Counter(), collections.Counter()
    line_i, line_s = collections.Counter(), collections.Counter()
    for (ln, _), r in zip(ins, data):
        ni, ns = num(r[col_ins]), num(r[col_smp])
        sec_i[section(ln)] += ni
        sec_s[section(ln)] += ns
        line_i[ln] += ni
        line_s[ln] += ns
    ti, ts = sum(sec_i.values()) or 1.0, sum(sec_s.values()) or 1.0
    print(f"{a.kernel}: {ti:.4g} instructions executed, {ts:.0f} stall samples\n")
    print("| section | instructions % | stall samples % |\n|:--|--:|--:|")
    for k, v in sec_i.most_common():
        print(f"| {k} | {100 * v / ti:.1f} | {100 * sec_s[k] / ts:.1f} |")
    print(f"\nsource lines by stall samples (top {a.top}):")
    for ln, v in line_s.most_common(a.top):
        text = source[ln - 1].strip()[:90] if ln else ""
        print(f"  {100 * v / ts:5.1f}% samples  {100 * line_i[ln] / ti:5.1f}% instr  L{ln}: {text}")


if __name__ == "__main__":
    main()
