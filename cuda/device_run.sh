set -o pipefail
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } | tee $OUT/machine.txt
echo "== gpu tests"
timeout 200 ./gpu_test --test-threads=1 --nocapture 2>&1 | tee $OUT/gpu_tests.txt | grep -E "^test .*(ok|FAILED)$|panicked|test result" | tail -12
grep -E "rel err" $OUT/gpu_tests.txt | awk '{print $1, $NF}' | sort -k2 -g | awk '{m[$1]=$2} END {for (k in m) print "max rel err", k, m[k]}'
echo "== memcheck"
timeout 150 compute-sanitizer --tool memcheck ./gpu_test small_mixed_case --test-threads=1 2>&1 | tee $OUT/memcheck.txt | tail -2
echo "== racecheck"
timeout 150 compute-sanitizer --tool racecheck ./gpu_test small_mixed_case --test-threads=1 2>&1 | tee $OUT/racecheck.txt | tail -2
echo "== ncu"
timeout 120 ncu --launch-skip 7 --launch-count 7 --metrics gpu__time_duration.sum ./gpu_bench 32768 2>&1 | tee $OUT/ncu_32768.txt | grep -E "^  [a-z_0-9]+|gpu__time_duration" | paste - - | awk '{print $1, $(NF-1), $(NF)}'
echo "== bench (command: gpu_bench --dump /tmp/dump --block 128; python3 cuda/bench_torch.py --dump /tmp/dump --block 128)"
timeout 200 ./gpu_bench --dump /tmp/dump --block 128 2>&1 | tee $OUT/bench_blockres.txt
timeout 300 python3 bench_torch.py --dump /tmp/dump --block 128 2>&1 | tee $OUT/bench_torch.txt
