#!/usr/bin/env bash
# A rank that dies or hangs on GPUs (device tool, kind nvidia-h200-x2): tests/reference/test_rank_failures.py
# with QFT_FAILURE_DEVICE=cuda — 2 ranks training a tiny bf16 model over NCCL, one SIGKILLed or SIGSTOPped
# mid-training; the job must end within 60 s (collective_timeout 5 s) with the waiting rank named. Prints
# how each run ended. Needs .carry/ (Debian's libpcre2-dev .deb).
#   device run (kind nvidia-h200-x2): bash tests/device/failure_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist
echo "built in $SECONDS s"
QFT_BIN=$PWD/build-gpu/qft-dist QFT_FAILURE_DEVICE=cuda python3 -m pytest -q -s -p no:cacheprovider \
  tests/reference/test_rank_failures.py 2>&1 | grep -E "ENDED|passed|failed|Error|assert" | cut -c1-600
echo "done at $SECONDS s"
