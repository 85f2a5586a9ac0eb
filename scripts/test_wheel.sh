#!/usr/bin/env bash
# The Python package as users install it: a wheel that holds libblockres.so, built from
# the repository with pip, installed into a fresh venv, used from outside the repository.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/target/wheel-test"
rm -rf "$out" "$root/onnx/build"
mkdir -p "$out"
"$root/.venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$out/dist" "$root/onnx"
python3 -m venv "$out/venv"
"$out/venv/bin/python" -m pip install -q --disable-pip-version-check "$out"/dist/blockres_onnx-*.whl \
  -r <(grep -E '^(numpy|onnx|onnxruntime)==' "$root/onnx/requirements.txt")
cd "$out"
env -u BLOCKRES_LIBRARY -u PYTHONPATH "$out/venv/bin/python" - <<'PY'
import numpy as np, onnxruntime as ort, blockres_onnx as br
path = br.library_path()
assert "site-packages/blockres_onnx/libblockres.so" in path, path
sess = br.session(gamma=0.9, block_size=8)
rng = np.random.default_rng(0)
q = rng.standard_normal((1, 2, 50, 16)).astype(np.float32)
v = np.full((1, 2, 50, 16), 2.5, np.float32)   # SPEC §1: constant values pass through
(y,) = sess.run(None, {"Q": q, "K": q, "V": v})
assert np.abs(y - 2.5).max() < 1e-5, np.abs(y - 2.5).max()
print(f"wheel ok: {path}, onnxruntime {ort.__version__}")
PY
