#!/usr/bin/env bash
# Python side of the project (the numpy peer, the ORT host tests, the NVRTC check):
# one virtual environment in .venv with the pinned packages of onnx/requirements.txt,
# installed from the package registry. Idempotent; prints nothing on a warm run.
#   bash scripts/setup.sh          the main job's packages (onnx/requirements.txt)
#   bash scripts/setup.sh torch    plus PyTorch for the tests (onnx/requirements-torch.txt)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/onnx/requirements.txt"
if [ "${1:-}" = torch ]; then req="$root/onnx/requirements-torch.txt"; fi
stamp="$venv/.requirements.sha"
want=$(cat "$req" "$root/onnx/requirements.txt" | sha256sum | cut -d' ' -f1)
# A venv already set up with torch serves the main job too.
if [ "${1:-}" != torch ] && [ -f "$venv/.requirements-torch.sha" ] && \
   [ "$(cat "$venv/.requirements-torch.sha")" = "$(cat "$root/onnx/requirements-torch.txt" "$root/onnx/requirements.txt" | sha256sum | cut -d' ' -f1)" ]; then
  exit 0
fi
if [ "${1:-}" = torch ]; then stamp="$venv/.requirements-torch.sha"; fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv python3-pip >/dev/null
      python3 -m venv "$venv"
    else
      echo "setup: python3 -m venv failed; install python3-venv" >&2
      exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
# Older onnxruntime builds, each in its own folder (used through PYTHONPATH), for the
# tests of the custom op's API-version promise: 1.20 must run it, 1.17 must refuse it
# with a message. 1.17 predates numpy 2, so its folder carries its own numpy.
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --upgrade \
  --target "$venv/ort-1.20" onnxruntime==1.20.1
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --upgrade \
  --target "$venv/ort-1.17" onnxruntime==1.17.3 numpy==1.26.4
echo "$want" > "$stamp"
