#!/usr/bin/env bash
# v56 (device): the register-tiled coarse kernel and the head-group split (v55) together.
# Tests (default plan; unfused so small m takes the coarse kernel; split in 3), sanitizers
# on the new coarse kernel and a split call, then timings alternating main's gpu_bench
# (BASE) with this build split and not, and ncu per kernel at 32768 for both builds.
# Here: bash cuda/stage_bins.sh .dev/chk b386771; there: OUT=$OUT bash results/v56_check.sh (carry .dev/chk).
bin=$(bash cuda/unpack_bins.sh .dev/chk)
B=${BASE:-gpu_bench_b386771}
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader > $OUT/machine.txt
timeout 120 $bin/gpu_test --test-threads=1 > $OUT/tests.txt 2>&1; echo "tests rc=$?" >> $OUT/machine.txt
timeout 50 $bin/gpu_decode --test-threads=1 > $OUT/tests_decode.txt 2>&1; echo "decode tests rc=$?" >> $OUT/machine.txt
BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 80 $bin/gpu_test f16_matches bf16_matches small_mixed non_finite host_stream constant_values --test-threads=1 > $OUT/tests_split3.txt 2>&1
echo "split-3 tests rc=$?" >> $OUT/machine.txt
for tool in memcheck racecheck; do
  echo "--- $tool" >> $OUT/san.txt
  BLOCKRES_GPU_GROUPS=3 BLOCKRES_GPU_FUSED=0 timeout 50 compute-sanitizer --tool $tool --print-limit 3 \
    $bin/gpu_test small_mixed_case host_stream_entry --test-threads=1 >> $OUT/san.txt 2>&1
done
NS="4096 16384 32768 65536"
for r in 1 2; do
  timeout 40 $bin/$B $NS > $OUT/base$r.txt 2>&1
  BLOCKRES_GPU_GROUPS=1 timeout 40 $bin/gpu_bench $NS > $OUT/one$r.txt 2>&1
  timeout 40 $bin/gpu_bench $NS > $OUT/split$r.txt 2>&1
done
timeout 40 $bin/$B --bidirectional 4096 16384 > $OUT/bidir_base.txt 2>&1
timeout 40 $bin/gpu_bench --bidirectional 4096 16384 > $OUT/bidir_new.txt 2>&1
for spec in "base $B" "new gpu_bench BLOCKRES_GPU_GROUPS=1"; do
  set -- $spec; label=$1; b=$2; shift 2
  env "$@" timeout 60 ncu --clock-control none --launch-skip 30 --launch-count 6 \
    --metrics gpu__time_duration.sum,smsp__inst_executed.sum,launch__grid_size,launch__registers_per_thread --csv \
    "$bin/$b" 32768 2>/dev/null | grep '^"' | python3 -c "
import csv,sys
r=csv.reader(sys.stdin); h=next(r); i=h.index('Kernel Name'); j=h.index('Metric Name'); k=h.index('Metric Value'); ids=h.index('ID')
d={}
for x in r: d.setdefault((x[ids],x[i]),{})[x[j]]=x[k].replace(',','')
tot=0
for (idn,kn),v in d.items():
    t=float(v.get('gpu__time_duration.sum',0))/1000; tot+=t
    print(f'$label 32768 {kn[:28]:28s} {t:7.1f} us {float(v.get(\"smsp__inst_executed.sum\",0))/1e6:6.2f} Minst grid {v.get(\"launch__grid_size\")} regs {v.get(\"launch__registers_per_thread\")}')
print(f'$label 32768 total {tot:.1f} us')
" >> $OUT/ncu.txt
done
echo "== summary"; cat $OUT/machine.txt
for f in tests tests_decode tests_split3; do echo "$f: $(grep -h "test result" $OUT/$f.txt | paste -sd' ')"; grep -h "FAILED\|panicked" $OUT/$f.txt | head -3; done
grep -E "^---|ERROR SUMMARY|RACECHECK SUMMARY" $OUT/san.txt | paste -sd' ' | sed 's/=========//g'
for f in base1 one1 split1 base2 one2 split2 bidir_base bidir_new; do echo "$f: $(grep -E "^\| +[0-9]" $OUT/$f.txt | awk -F"|" "{printf \"%s:%s \", \$2, \$5}")"; done
cat $OUT/ncu.txt
