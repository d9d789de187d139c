#!/usr/bin/env bash
# Times qft-dist LoRA training on the GPU on a random-init Qwen3-0.6B-shaped model (made by check_bf16.py),
# at the shape of the peer baseline in shared/reference/machines.md (seq 2048, micro-batch 8, recompute,
# LoRA r16 alpha32 on all linear layers). Prints the trainer's log lines and a summary line.
#   tests/device/train_speed.sh QFT_BIN MODEL_DIR OUT_DIR [MICRO_BATCH] [CHECKPOINTING]
set -euo pipefail
QFT=$1; MODEL=$2; OUT=$3; MB=${4:-8}; GC=${5:-true}
WORK=/tmp/qft-speed-$MB-$GC
mkdir -p $WORK
python3 - "$WORK/rows.jsonl" "$MB" <<'PY'
import json, random, sys
r = random.Random(0)
with open(sys.argv[1], "w") as f:
    for _ in range(int(sys.argv[2]) * 8):
        ids = [r.randrange(151936) for _ in range(2048)]
        f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
PY
cat > $WORK/speed.yaml <<YAML
model: {model_name_or_path: $MODEL, torch_dtype: bf16, device: cuda}
lora: {finetuning_type: lora, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $WORK/rows.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: $MB, gradient_accumulation_steps: 1,
           max_steps: 8, logging_steps: 1, gradient_checkpointing: $GC, shuffle: false}
output: {output_dir: $WORK/run, overwrite_output_dir: true}
YAML
"$QFT" $WORK/speed.yaml 2>&1 | grep -E "step|error" | tail -4
cp $WORK/run/trainer_log.jsonl "$OUT/speed_mb${MB}_gc${GC}.jsonl"
python3 - "$WORK/run/trainer_log.jsonl" "$MB" "$GC" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:]  # skip 2 warm-up steps
tps = statistics.median(r["tokens_per_second"] for r in rows)
peak = max(r["peak_memory_bytes"] for r in rows) / 2**30
print(f"SPEED 0.6B seq2048 mb{sys.argv[2]} recompute={sys.argv[3]}: {tps:,.0f} tokens/s, "
      f"{2048 * int(sys.argv[2]) / tps:.3f} s/step, peak {peak:.1f} GiB")
PY
