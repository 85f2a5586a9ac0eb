#!/usr/bin/env bash
# Prints the folder that holds BINDIR's executables: BINDIR itself, or, where
# cuda/stage_bins.sh left them gzipped (NAME.gz: the embedded PTX and SASS compress
# about 5×, which keeps them within what the device tool carries), a folder under /tmp
# they are unpacked into. The device scripts start with bin=$(bash cuda/unpack_bins.sh DIR).
set -euo pipefail
src=$(readlink -f "${1:?usage: bash cuda/unpack_bins.sh BINDIR}")
if ! compgen -G "$src/*.gz" > /dev/null; then
  echo "$src"
  exit 0
fi
dst=${TMPDIR:-/tmp}/blockres_bins
mkdir -p "$dst"
for f in "$src"/*; do
  case "$f" in
    *.gz) gunzip -c "$f" > "$dst/$(basename "$f" .gz)" ;;
    *) cp "$f" "$dst/" ;;
  esac
done
chmod +x "$dst"/*
echo "$dst"
