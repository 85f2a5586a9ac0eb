#!/usr/bin/env bash
# The main job: the CPU demo table (dense vs block), on embedded synthetic inputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo run --release --quiet
