#!/usr/bin/env bash
# Tensor parallelism on 2 GPUs of one host (device tool, kind nvidia-h200-x2): (1) a tiny model trained with
# TP 2 (NCCL) against 1 GPU, same global batch, bf16: loss curves; (2) Qwen3-32B-shaped random weights, bf16
# LoRA r16 alpha32 on all seven projections, seq 2048, micro-batch 1, recompute, TP 2: tokens/s and peak
# memory per GPU. Prints one table last. Needs .carry/ (Debian's libpcre2-dev .deb).
#   device run (kind nvidia-h200-x2): bash tests/device/tp_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist
BUILD_S=$SECONDS
QFT=build-gpu/qft-dist
MPIRUN="mpirun --allow-run-as-root -x NCCL_NVLS_ENABLE"
W=/tmp/qft-tp
rm -rf $W && mkdir -p $W
$QFT init-model --preset tiny --dtype bf16 --initializer-range 0.2 --seed 0 --tokenizer build-gpu/qwen3-tokenizer \
     --output $W/tiny > "$OUT/init_tiny.log" 2>&1 || { tail "$OUT/init_tiny.log"; exit 1; }
tiny() {  # name tp launcher...
  local name=$1 tp=$2; shift 2
  "$@" $QFT configs/demo.yaml --override model.model_name_or_path=$W/tiny --override model.device=cuda \
      --override data.cache_dir=$W/cache --override output.output_dir=$W/$name \
      --override training.max_steps=30 --override training.logging_steps=1 --override training.save_steps=0 \
      --override training.lr_scheduler_type=constant --override training.warmup_ratio=0 \
      --override distributed.tensor_parallel_size=$tp > "$OUT/tiny_$name.log" 2>&1
  echo $?
}
ONE_RC=$(tiny one 1)
TP_RC=$(tiny tp2 2 $MPIRUN -np 2)
python3 - $W/one/trainer_log.jsonl $W/tp2/trainer_log.jsonl > "$OUT/tiny_compare.txt" <<'PY'
import json, sys
a = [json.loads(l)["loss"] for l in open(sys.argv[1])]
b = [json.loads(l)["loss"] for l in open(sys.argv[2])]
rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"{len(a)} vs {len(b)} steps, max relative loss difference {rel:.2e} (bf16), first {a[0]:.4f} vs {b[0]:.4f}, "
      f"last {a[-1]:.4f} vs {b[-1]:.4f}")
PY
echo "tiny done at $SECONDS s: $(cat $OUT/tiny_compare.txt)"

$QFT init-model --preset 32B --dtype bf16 --seed 0 --output $W/model32b > "$OUT/init32b.log" 2>&1 ||
  { tail "$OUT/init32b.log"; exit 1; }
echo "32B written at $SECONDS s"
random_rows $W/rows.jsonl 16 2048
cat > $W/lora32b.yaml <<YAML
model: {model_name_or_path: $W/model32b, torch_dtype: bf16, device: cuda}
lora: {finetuning_type: lora, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: 1, gradient_accumulation_steps: 1,
           max_steps: 8, logging_steps: 1, save_steps: 0, gradient_checkpointing: true, shuffle: false}
distributed: {tensor_parallel_size: 2}
output: {output_dir: $W/run32b, overwrite_output_dir: true}
YAML
$MPIRUN -np 2 $QFT $W/lora32b.yaml > "$OUT/tp32b.log" 2>&1; TP32_RC=$?
python3 - $W/run32b/trainer_log.jsonl > "$OUT/tp32b.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:]
print(f"{statistics.median(r['tokens_per_second'] for r in rows):,.0f} tokens/s, "
      f"peak {max(r['peak_memory_bytes'] for r in rows) / 2**30:.1f} GiB per GPU (rank 0), losses "
      + " ".join(f"{r['loss']:.3f}" for r in rows))
PY
echo "done at $SECONDS s"
echo
echo "| check | result |"
echo "|---|---|"
echo "| build (s) | $BUILD_S |"
echo "| tiny, 1 GPU vs TP 2 (NCCL), bf16, 30 steps | rc=$ONE_RC / rc=$TP_RC; $(cat $OUT/tiny_compare.txt) |"
echo "| Qwen3-32B bf16 LoRA r16, TP 2, seq 2048, mb 1, recompute | rc=$TP32_RC; $(cat $OUT/tp32b.txt 2>/dev/null) |"
grep -m1 "tensor parallel 2" "$OUT/tp32b.log" | cut -c1-220 | sed 's/^/| start | /; s/$/ |/'
