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
