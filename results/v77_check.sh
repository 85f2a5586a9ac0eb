#!/usr/bin/env bash
# v77 (device), written 2026-12-07 (seventh session), after its device time was spent:
# a call captured into a CUDA graph and replayed on new inputs (the GPU test
# `a_captured_call_replays_on_new_inputs`, through the host-stream entry that ONNX
# Runtime's op uses), on main (8df30e3 and later: that entry clears the record before
# every call) and on the build before the fix (7383470, epochs only, main's tests/gpu.rs
# copied in); then the whole GPU test suite and memcheck of the new test on main.
# Staging, here: `cargo build --release --features cuda --test gpu` on main and, in a
# worktree of 7383470 with main's tests/gpu.rs, the same; strip both test executables
# into .dev/v77 as gpu_test and gpu_test_7383470, gzip them, copy call.sh and this file
# (as v77.sh) beside them.
# There (carry [".dev/v77"]): OUT=$OUT bash .dev/v77/call.sh 200 bash .dev/v77/v77.sh
bin=$(bash cuda/unpack_bins.sh .dev/v77)
res() { grep -E 'test result|FAILED|panicked|relative error' "$1" | head -12; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
echo "--- before the fix (7383470)"
timeout 40 $bin/gpu_test_7383470 a_captured --nocapture > $OUT/before.txt 2>&1; res $OUT/before.txt
echo "--- main"
timeout 40 $bin/gpu_test a_captured --nocapture > $OUT/fix.txt 2>&1; res $OUT/fix.txt
timeout 100 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "all: $(grep -E 'test result' $OUT/tests.txt)"
timeout 40 compute-sanitizer --tool memcheck $bin/gpu_test a_captured > $OUT/san.txt 2>&1
echo "memcheck: $(grep -E 'ERROR SUMMARY|test result' $OUT/san.txt | paste -sd' ')"
