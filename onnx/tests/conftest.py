"""Make the `blockres_onnx` package (in onnx/) importable without installing it."""

import sys
from pathlib import Path

ONNX_DIR = Path(__file__).resolve().parents[1]
if str(ONNX_DIR) not in sys.path:
    sys.path.insert(0, str(ONNX_DIR))
