#!/bin/bash
# The GPU session of docs/PERF.md: build every check program, run them (validation + benchmark), compare NF4
# with bitsandbytes, then compute-sanitizer (memcheck; racecheck where shared memory is used) on the
# validation parts. Usage, from anywhere on the GPU machine:
#   kernels/dev/run_gpu.sh [WHEEL_DIR] [LOG_DIR]   (WHEEL_DIR holds the bitsandbytes wheel if not installed)
set -u
wheels=${1:+$(realpath "$1")}
out=${2:-/tmp/qft-kernels}
cd "$(dirname "$0")/.."
mkdir -p "$out"
log=$out/log.txt
if [ -n "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; /usr/local/cuda/bin/nvcc --version | tail -2; } | tee "$log"
make -j16 BUILD=build > "$out/build.txt" 2>&1 || { tail -30 "$out/build.txt"; exit 1; }
for c in rms_norm qk_norm_rope swiglu adamw cross_entropy; do
  echo "== $c" | tee -a "$log"
  timeout 120 "build/${c}_check" >> "$log" 2>&1; echo "exit $?" | tee -a "$log"
done
echo "== nf4 (bitsandbytes cases)" | tee -a "$log"
timeout 120 python3 dev/nf4_bnb_dump.py /tmp/bnb >> "$log" 2>&1
timeout 120 build/nf4_check /tmp/bnb >> "$log" 2>&1; echo "exit $?" | tee -a "$log"
grep -a 'FAIL\|mismatches\|passed' "$log"
echo "== table"; grep -a '^|' "$log"
san=$out/sanitizer.txt
: > "$san"
for c in rms_norm qk_norm_rope swiglu adamw cross_entropy nf4; do
  echo "== memcheck $c" >> "$san"
  QFT_CHECK_VALIDATE_ONLY=1 timeout 45 compute-sanitizer --tool memcheck --leak-check no "build/${c}_check" >> "$san" 2>&1
  echo "exit $?" >> "$san"
done
for c in rms_norm qk_norm_rope cross_entropy; do
  echo "== racecheck $c" >> "$san"
  QFT_CHECK_VALIDATE_ONLY=1 timeout 45 compute-sanitizer --tool racecheck "build/${c}_check" >> "$san" 2>&1
  echo "exit $?" >> "$san"
done
grep -a '^==\|ERROR SUMMARY\|RACECHECK SUMMARY\|exit' "$san"
