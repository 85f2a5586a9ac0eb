"""Out of memory is an error status, never an abort (issue 10, item 1): calls whose
scratch cannot be had under an address-space limit (`ulimit -v`) return an
onnxruntime error naming the size. Each case runs in a subprocess with the limit set.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ONNX_DIR = Path(__file__).resolve().parents[1]

CASE = """
import resource, sys
import numpy as np
sys.path.insert(0, {onnx_dir!r})
import blockres_onnx as br
sess = br.session(**{attrs!r})
q = np.ones({shape!r}, np.float32)
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
try:
    sess.run(None, {{"Q": q, "K": q, "V": q}})
except Exception as e:
    print("ERROR", e)
else:
    print("RAN")
"""


@pytest.mark.parametrize(
    "attrs,shape",
    [
        # block_size = 1 at n = 100000: an m×m = 10^10-entry reduced system (40 GB).
        (dict(structure="block", block_size=1), (1, 1, 100_000, 1)),
        # The dense bidirectional operator at n = 32768: an n×n matrix (4 GiB).
        (dict(structure="dense", causal=0), (1, 1, 32_768, 1)),
    ],
    ids=["block_size=1", "dense-bidirectional"],
)
def test_scratch_that_cannot_be_had_is_an_error(attrs, shape):
    limit = 3 << 30
    code = textwrap.dedent(CASE.format(onnx_dir=str(ONNX_DIR), attrs=attrs, shape=shape, limit=limit))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the process died (status {r.returncode}): {r.stderr[-1500:]}"
    out = r.stdout.strip()
    if out.startswith("ERROR"):
        assert "out of memory" in out and "bytes" in out, out
    else:
        assert out == "RAN", out


THREADS = """
import resource, sys, threading
import numpy as np
sys.path.insert(0, {onnx_dir!r})
import blockres_onnx as br
sess = br.session(structure="dense", gamma=0.9)
rng = np.random.default_rng(0)
q = rng.standard_normal((1, 2, 1536, 64)).astype(np.float32)
(want,) = sess.run(None, {{"Q": q, "K": q, "V": q}})
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize")) * 1024
# Room for 16 Python thread stacks (8 MiB each) and the calls' own scratch, but not for
# a 2×L3 GEMM buffer per calling thread (600 MiB each on a 256 MiB-L3 machine).
limit = vm + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
bad = []
def work():
    for _ in range(3):
        (y,) = sess.run(None, {{"Q": q, "K": q, "V": q}})
        if not np.array_equal(y, want):
            bad.append(float(np.abs(y - want).max()))
ts = [threading.Thread(target=work) for _ in range(16)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("BAD", bad) if bad else print("OK")
"""


def test_many_calling_threads_under_an_address_space_limit():
    """Issue 10 item 4: the op computes on its own pool (one thread per core), so faer's
    thread-local GEMM buffers (2×L3 each) are per pool thread, not per calling thread:
    16 threads calling at once fit in 1 GiB above the session's footprint, and agree."""
    code = textwrap.dedent(THREADS.format(onnx_dir=str(ONNX_DIR)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the process died (status {r.returncode}): {r.stderr[-1500:]}"
    assert r.stdout.strip() == "OK", r.stdout + r.stderr[-1500:]
