#!/usr/bin/env bash
# Python side of the project (the numpy peer, the ORT host tests, the NVRTC check):
# one virtual environment in .venv with the pinned packages of onnx/requirements.txt,
# installed from the package registry. Idempotent; prints nothing on a warm run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
req="$root/onnx/requirements.txt"
stamp="$venv/.requirements.sha"
want=$(sha256sum "$req" | cut -d' ' -f1)
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
