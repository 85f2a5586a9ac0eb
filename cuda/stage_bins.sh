#!/usr/bin/env bash
# Here (not on the GPU machine): build the binaries the device scripts take into one
# ignored folder, and, for same-run A/B timings, gpu_bench of earlier commits beside them
# (gpu_bench_<commit>, built in a temporary worktree). Then, on the device machine:
#   OUT=$OUT bash cuda/gpu_check.sh .dev/chk
#   OUT=$OUT BASE=gpu_bench_<commit> bash cuda/bidir_run.sh .dev/chk
# and carry [".dev/chk"]. Usage: bash cuda/stage_bins.sh [DIR] [COMMIT ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dir=${1:-.dev/chk}
shift || true
mkdir -p "$dir"
export BLOCKRES_PYTHON=${BLOCKRES_PYTHON:-$root/.venv/bin/python}
msg=$(cargo build --release --features cuda --test gpu --test gpu_decode --example gpu_bench \
  --example gpu_decode_bench --message-format=json 2>/dev/null)
# The test executables' paths, from cargo's own report rather than by hash.
exe() { printf '%s\n' "$msg" | python3 -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get('reason') == 'compiler-artifact' and m['target']['name'] == sys.argv[1] and m.get('executable'):
        print(m['executable'])" "$1" | tail -1; }
for t in gpu gpu_decode; do strip -o "$dir/${t}_test" "$(exe $t)"; done
mv "$dir/gpu_decode_test" "$dir/gpu_decode"
for e in gpu_bench gpu_decode_bench; do strip -o "$dir/$e" "$(exe $e)"; done
for c in "$@"; do
  short=$(git rev-parse --short "$c")
  wt=$(mktemp -d)
  git worktree add -q --detach "$wt" "$c"
  (cd "$wt" && CARGO_TARGET_DIR="$root/target/base" cargo build -q --release --features cuda --example gpu_bench)
  strip -o "$dir/gpu_bench_$short" "$root/target/base/release/examples/gpu_bench"
  git worktree remove --force "$wt"
done
# Gzipped: the device tool carries at most 64 MiB, and the embedded PTX and SASS make
# each executable 14–25 MB; the device scripts unpack them (cuda/unpack_bins.sh).
gzip -6 -f "$dir"/gpu_*[!z]
ls -la "$dir"
echo "total: $(du -cm "$dir"/* | tail -1 | cut -f1) MiB (the carry limit is 64)"
