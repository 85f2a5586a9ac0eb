"""The op after fork: a child process (os.fork, a multiprocessing fork pool) that uses a
session the parent has already run must compute, not hang (rayon's global pool does
not survive fork; the op rebuilds its own). Each case runs in a subprocess with a
timeout, so a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ONNX_DIR = Path(__file__).resolve().parents[1]

PRELUDE = f"""
import os, sys
import numpy as np
sys.path.insert(0, {str(ONNX_DIR)!r})
import blockres_onnx as br
rng = np.random.default_rng(0)
# Several heads, so the op spreads them over its threads.
q = rng.standard_normal((2, 4, 300, 16)).astype(np.float32)
sess = br.session(gamma=0.7, structure="block", block_size=16)
def run(_=None):
    return sess.run(None, {{"Q": q, "K": q, "V": q}})[0]
before = run()
"""

CASES = {
    "os.fork": """
pid = os.fork()
if pid == 0:
    os._exit(0 if np.array_equal(run(), before) else 3)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
assert np.array_equal(run(), before)  # the parent's pool still works
""",
    "multiprocessing fork pool": """
import multiprocessing as mp
with mp.get_context("fork").Pool(2) as pool:
    outs = pool.map(run, range(4))
assert all(np.array_equal(o, before) for o in outs)
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_runs_in_a_forked_child(case):
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(CASES[case]) + "print('ok')\n"
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: the child hung (no result within 60 s)")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
