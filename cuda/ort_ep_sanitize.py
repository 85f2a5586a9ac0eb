"""One small CUDA-EP run of the op (f16, GQA, causal block, then bidirectional) for compute-sanitizer."""
import sys
from pathlib import Path
import numpy as np
import onnxruntime as ort
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "onnx"))
import blockres_onnx as br
ort.preload_dlls()
rng = np.random.default_rng(1)
for attrs in (dict(block_size=48, gamma=0.7), dict(block_size=32, causal=0, gamma=0.5)):
    sess = ort.InferenceSession(br.make_model("float16", **attrs).SerializeToString(), br.register(ort.SessionOptions()), providers=["CUDAExecutionProvider"])
    q = rng.standard_normal((1, 4, 200, 40)).astype(np.float16)
    kv = rng.standard_normal((1, 2, 200, 40)).astype(np.float16)
    y = sess.run(None, {"Q": q, "K": kv, "V": kv})[0]
    print(attrs, "finite:", bool(np.isfinite(y).all()))
