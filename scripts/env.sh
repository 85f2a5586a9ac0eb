# Sourced by the scripts: paths into the virtual environment (no network use here).
root=${root:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export BLOCKRES_PYTHON="$root/.venv/bin/python"
# The onnxruntime shared library of the venv's wheel, by its full versioned name, for
# hosts that load ORT dynamically (the `ort` crate's load-dynamic feature).
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  for f in "$root"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.*; do
    if [ -e "$f" ]; then export ORT_DYLIB_PATH="$f"; fi
  done
fi
