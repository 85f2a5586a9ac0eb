"""Make the `blockres_onnx` package (in onnx/) importable without installing it, and
fix the run's random seed (fresh each run unless BLOCKRES_SEED is set)."""

import os
import sys
import time
from pathlib import Path

ONNX_DIR = Path(__file__).resolve().parents[1]
if str(ONNX_DIR) not in sys.path:
    sys.path.insert(0, str(ONNX_DIR))

os.environ.setdefault("BLOCKRES_SEED", str(time.time_ns() % (1 << 32)))


def pytest_report_header(config):
    return f"BLOCKRES_SEED={os.environ['BLOCKRES_SEED']} (set it to replay a run)"
