#!/usr/bin/env bash
# Pack each run of DEST (weights, config, log, console) into OUT/NAME.tgz (device tool:
# at most 8 files come back).
set -euo pipefail
dest=$1 out=$2
for d in "$dest"/*/; do
  name=$(basename "$d")
  tar czf "$out/$name.tgz" -C "$dest" "$name" "$name.out"
done
ls -la "$out"
