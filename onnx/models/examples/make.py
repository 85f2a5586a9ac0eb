"""Writes the one-node models that `examples/ort_host.rs` runs: blockres.ResolventAttention
for float, float16 and bfloat16, symbolic shapes, γ = 0.9, block size 16, first-query
coarse logits. Run: `.venv/bin/python onnx/models/examples/make.py`."""

from pathlib import Path
import sys

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
import blockres_onnx as br  # noqa: E402

for dtype in ("float32", "float16", "bfloat16"):
    model = br.make_model(dtype, gamma=0.9, block_size=16, coarse_query="first")
    (HERE / f"resolvent_{dtype}.onnx").write_bytes(model.SerializeToString())
