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

# The memory plan at start: a run that clearly cannot fit is refused before its first step (and leaves no
# output); a run that fits logs its estimate next to the peak it then reaches.
QFT=build-gpu/qft-dist
W=/tmp/qft-memplan
mkdir -p $W
$QFT init-model --preset 1.7B --dtype bf16 --seed 0 --output $W/model > "$OUT/init.log" 2>&1 || tail "$OUT/init.log"
random_rows $W/rows.jsonl 64 2048
for case in "64 false" "8 true"; do
  set -- $case
  cat > $W/run_$1.yaml <<YAML
model: {model_name_or_path: $W/model, torch_dtype: bf16, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: $1, max_steps: 4, logging_steps: 1,
           gradient_checkpointing: $2, shuffle: false}
output: {output_dir: $W/run_$1, overwrite_output_dir: true}
YAML
  $QFT $W/run_$1.yaml > "$OUT/memplan_$1.log" 2>&1
  echo "MEMPLAN mb$1 recompute=$2: exit $? | $(grep -m1 -o 'memory per GPU.*' "$OUT/memplan_$1.log" | cut -c1-200)"
  grep -m1 "cannot fit" "$OUT/memplan_$1.log" | cut -c1-300
  [ -f $W/run_$1/trainer_log.jsonl ] && python3 -c "
import json,sys; rows=[json.loads(l) for l in open('$W/run_$1/trainer_log.jsonl') if '\"loss\"' in l]
print('MEMPLAN measured peak', round(max(r['peak_memory_bytes'] for r in rows)/2**30, 1), 'GiB')"
  ls $W/run_$1 2>/dev/null | head -3
done
echo "done at $SECONDS s"
