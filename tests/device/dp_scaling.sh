#!/usr/bin/env bash
# Data-parallel scaling on 2 GPUs of one host (device tool, kind nvidia-h200-x2): Qwen3-8B-shaped random
# model, bf16 LoRA r16 alpha32 on all seven projections, seq 2048, micro-batch 2, no recompute; qft on 1 GPU
# and on 2 (`mpirun -np 2`, NCCL), and the peer (transformers + PEFT under DDP, torchrun) on 1 and 2, in the
# same call. Prints one table last. Needs .carry/ (Debian's libpcre2-dev .deb).
#   device run (kind nvidia-h200-x2): bash tests/device/dp_scaling.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist
echo "built in $SECONDS s"
QFT=build-gpu/qft-dist
W=/tmp/qft-dp
mkdir -p $W
MB=${MB:-2}; SEQ=2048; STEPS=${STEPS:-8}
$QFT init-model --preset 8B --dtype bf16 --seed 0 --output $W/model8b > "$OUT/init.log" 2>&1 || { tail "$OUT/init.log"; exit 1; }
echo "model written at $SECONDS s"
random_rows $W/rows.jsonl $((MB * 2 * STEPS)) $SEQ
cat > $W/lora.yaml <<YAML
model: {model_name_or_path: $W/model8b, torch_dtype: bf16, device: cuda}
lora: {finetuning_type: lora, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: $MB, gradient_accumulation_steps: 1,
           max_steps: $STEPS, logging_steps: 1, save_steps: 0, gradient_checkpointing: false, shuffle: false}
output: {output_dir: $W/run, overwrite_output_dir: true}
YAML
summary() {  # name log
  python3 - "$2" "$1" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:]
tps = statistics.median(r["tokens_per_second"] for r in rows)
peak = max(r["peak_memory_bytes"] for r in rows) / 2**30
print(f"QFT {sys.argv[2]}: {tps:,.0f} tokens/s, peak {peak:.1f} GiB (rank 0)")
PY
}
$QFT $W/lora.yaml > "$OUT/qft1.log" 2>&1 && summary "qft gpus=1" $W/run/trainer_log.jsonl | tee "$OUT/qft1.txt"
mpirun --allow-run-as-root -np 2 -x NCCL_NVLS_ENABLE $QFT $W/lora.yaml > "$OUT/qft2.log" 2>&1 &&
  summary "qft gpus=2" $W/run/trainer_log.jsonl | tee "$OUT/qft2.txt"
grep -m1 "gradients over" "$OUT/qft2.log" | sed 's/.*training/training/' | cut -c1-200
echo "qft done at $SECONDS s"
torchrun --nproc-per-node 1 tests/device/peer_ddp.py $W/model8b $MB $SEQ $STEPS > "$OUT/peer1.log" 2>&1; grep PEER "$OUT/peer1.log" | tee "$OUT/peer1.txt"
torchrun --nproc-per-node 2 tests/device/peer_ddp.py $W/model8b $MB $SEQ $STEPS > "$OUT/peer2.log" 2>&1; grep PEER "$OUT/peer2.log" | tee "$OUT/peer2.txt"
echo "done at $SECONDS s"
python3 - "$OUT" <<'PY'
import re, sys, pathlib
out = pathlib.Path(sys.argv[1])
def tps(name):
    p = out / name
    m = re.search(r"([\d,]+) tokens/s", p.read_text()) if p.exists() else None
    return float(m.group(1).replace(",", "")) if m else float("nan")
q1, q2, p1, p2 = tps("qft1.txt"), tps("qft2.txt"), tps("peer1.txt"), tps("peer2.txt")
print("\n| Qwen3-8B bf16 LoRA r16, seq 2048, mb 2, no recompute | 1 GPU tok/s | 2 GPUs tok/s | 2-GPU efficiency |")
print("|---|---|---|---|")
print(f"| qft (NCCL) | {q1:,.0f} | {q2:,.0f} | {q2 / (2 * q1):.1%} |")
print(f"| transformers+PEFT DDP | {p1:,.0f} | {p2:,.0f} | {p2 / (2 * p1):.1%} |")
print(f"| qft / peer | {q1 / p1:.2f}x | {q2 / p2:.2f}x | |")
PY
