#!/usr/bin/env bash
# ZeRO on 2 GPUs of one host (device tool, kind nvidia-h200-x2), one call:
#  1. the communicator and ZeRO unit tests over NCCL (2 ranks);
#  2. a tiny bf16 model, LoRA: 1 GPU x accumulation 2 vs 2 GPUs with ZeRO 0/1/2/3 — loss curves;
#  3. Qwen3-8B-shaped random model, full fine-tuning, ZeRO-3 on 2 GPUs (and ZeRO-2 when ZERO2=1), seq 2048,
#     recompute: tokens/s and peak memory per GPU;
#  4. Qwen3-8B LoRA with ZeRO-3 on 2 GPUs: tokens/s and peak memory (the frozen base sharded).
# PARTS="unit tiny full8b lora8b" (the default) picks parts. Prints one table last. Needs .carry/ (Debian's libpcre2-dev .deb).
#   device run (kind nvidia-h200-x2): bash tests/device/zero_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist qft_parallel_tests
echo "built in $SECONDS s"
QFT=build-gpu/qft-dist
W=/tmp/qft-zero
mkdir -p $W
MPI="mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE"

PARTS=${PARTS:-unit tiny full8b lora8b}  # which parts to run
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has unit; then
QFT_TEST_COMMUNICATOR=nccl $MPI -x QFT_TEST_COMMUNICATOR build-gpu/qft_parallel_tests \
  --gtest_filter='Communicator*:Zero*:Stages/ZeroStage*' > "$OUT/unit.log" 2>&1
echo "unit tests over NCCL: rc=$? $(grep -c '\[       OK \]' "$OUT/unit.log") OK, $(grep -c FAILED "$OUT/unit.log") FAILED lines"
fi

summary() {  # name log -> one line
  python3 - "$2" "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
steady = rows[2:] or rows
tps = statistics.median(r["tokens_per_second"] for r in steady)
peak = max(r["peak_memory_bytes"] for r in rows) / 2**30
print(f"RESULT {sys.argv[2]} | {tps:,.0f} | {peak:.1f} | " + " ".join(f"{r['loss']:.4f}" for r in rows))
PY
}

# 2. Tiny curves.
if has tiny; then
$QFT init-model --preset tiny --dtype bf16 --seed 0 --output $W/tiny > "$OUT/init_tiny.log" 2>&1 || tail "$OUT/init_tiny.log"
random_rows $W/tiny_rows.jsonl 64 256
tiny() {  # name ranks accumulation stage
  cat > $W/$1.yaml <<YAML
model: {model_name_or_path: $W/tiny, torch_dtype: bf16, device: cuda}
lora: {r: 8, lora_alpha: 16, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/tiny_rows.jsonl}
training: {learning_rate: 1.0e-3, per_device_train_batch_size: 2, gradient_accumulation_steps: $3,
           max_steps: 8, logging_steps: 1, shuffle: false}
distributed: {zero_stage: $4}
output: {output_dir: $W/$1, overwrite_output_dir: true}
YAML
  if [ "$2" = 1 ]; then $QFT $W/$1.yaml > "$OUT/$1.log" 2>&1; else $MPI $QFT $W/$1.yaml > "$OUT/$1.log" 2>&1; fi ||
    { echo "$1 failed"; tail -5 "$OUT/$1.log"; return; }
  summary "$1" $W/$1/trainer_log.jsonl | tee -a "$OUT/results.txt"
}
tiny tiny_1gpu_acc2 1 2 0
for stage in 0 1 2 3; do tiny tiny_2gpu_zero$stage 2 1 $stage; done
echo "tiny done at $SECONDS s"
fi

# 3./4. 8B.
$QFT init-model --preset 8B --dtype bf16 --seed 0 --output $W/model8b > "$OUT/init8b.log" 2>&1 || tail "$OUT/init8b.log"
random_rows $W/rows8b.jsonl 64 2048
big() {  # name finetuning stage mb recompute steps
  cat > $W/$1.yaml <<YAML
model: {model_name_or_path: $W/model8b, torch_dtype: bf16, device: cuda}
lora: {finetuning_type: $2, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows8b.jsonl}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: $4, gradient_accumulation_steps: 1,
           max_steps: $6, logging_steps: 1, gradient_checkpointing: $5, shuffle: false}
distributed: {zero_stage: $3}
output: {output_dir: $W/$1, overwrite_output_dir: true}
YAML
  $MPI $QFT $W/$1.yaml > "$OUT/$1.log" 2>&1 || { echo "$1 failed"; grep -i -m3 "error\|out of memory" "$OUT/$1.log"; return; }
  summary "$1" $W/$1/trainer_log.jsonl | tee -a "$OUT/results.txt"
}
if has full8b; then
  big full8b_zero3_mb1 full 3 1 true 6
  echo "full 8B done at $SECONDS s"
  if [ "${ZERO2:-0}" = 1 ]; then big full8b_zero2_mb1 full 2 1 true 6; fi
fi
if has lora8b; then
  big lora8b_zero3_mb2 lora 3 2 false 8
  big lora8b_zero0_mb2 lora 0 2 false 8
fi
echo "done at $SECONDS s"
echo
echo "| run (2 H200 unless 1gpu) | tokens/s (all GPUs) | peak GiB (rank 0) | losses |"
echo "|---|---|---|---|"
sed -n 's/^RESULT \(.*\)/| \1 |/p' "$OUT/results.txt"
