#!/usr/bin/env bash
# One call on the GPU machine (device tool): build with CUDA, run the unit tests, check the bf16 training
# path against transformers + PEFT on a Qwen3-0.6B-shaped model, time a short training run, and print a
# short table last. Needs .carry/ (Debian's libpcre2-dev .deb: the image has no PCRE2 headers).
#   device run: bash launch/device_check.sh   (carry: [".carry"])
set -uo pipefail
OUT=${OUT:-/tmp/qft-device-out}
mkdir -p "$OUT"
log() { echo "== $*"; }
SECONDS=0
PCRE2_DIR=/tmp/pcre2
mkdir -p $PCRE2_DIR && dpkg -x .carry/libpcre2-dev_*.deb $PCRE2_DIR
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "configure"
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFT_PCRE2_ROOT=$PCRE2_DIR/usr \
      -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
log "build ($SECONDS s)"
cmake --build build-gpu -j 16 > "$OUT/build.log" 2>&1 || { grep -m 20 -A5 error "$OUT/build.log"; exit 1; }
BUILD_S=$SECONDS
log "unit tests ($SECONDS s)"
./build-gpu/qft_text_tests --gtest_brief=1 > "$OUT/text_tests.log" 2>&1; TEXT_RC=$?
./build-gpu/qft_torch_tests --gtest_brief=1 > "$OUT/torch_tests.log" 2>&1; TORCH_RC=$?
tail -3 "$OUT/text_tests.log"; tail -3 "$OUT/torch_tests.log"
log "bf16 check ($SECONDS s)"
python3 tests/device/check_bf16.py --probe build-gpu/qft-probe --out "$OUT" 2>&1 | tee "$OUT/bf16.log" | grep -v Warning
BF16_RC=${PIPESTATUS[0]}
log "training speed ($SECONDS s)"
bash tests/device/train_speed.sh build-gpu/qft-dist /tmp/qft-bf16/qwen3-0.6b-random "$OUT" 8 true 2>&1 | tee "$OUT/speed.log"
bash tests/device/train_speed.sh build-gpu/qft-dist /tmp/qft-bf16/qwen3-0.6b-random "$OUT" 4 false 2>&1 | tee -a "$OUT/speed.log"
log "done ($SECONDS s)"
echo
echo "| step | result |"
echo "|---|---|"
echo "| build (s) | $BUILD_S |"
echo "| qft_text_tests | rc=$TEXT_RC $(grep -E 'PASSED|FAILED' "$OUT/text_tests.log" | head -2 | tr '\n' ' ') |"
echo "| qft_torch_tests | rc=$TORCH_RC $(grep -E 'PASSED|FAILED' "$OUT/torch_tests.log" | head -2 | tr '\n' ' ') |"
grep -E "loss|grad_rel|BF16 CHECK|probe_seconds" "$OUT/bf16.log" | sed 's/^/| /; s/  */ | /; s/$/ |/'
grep SPEED "$OUT/speed.log" | sed 's/^/| /; s/$/ | |/'
