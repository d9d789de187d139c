#!/usr/bin/env bash
# Issue 8's speed table on one GPU (device tool, kind nvidia-h200), qft and its peers in the same call:
# transformers + PEFT eager, + Liger kernels, under torch.compile, and for QLoRA + bitsandbytes
# (tests/device/peer_train.py). Random-init Qwen3 shapes, seq 2048 unless said, LoRA r16 alpha32 on all seven
# projections, bf16, fused AdamW. Prints one table last: tokens/s, peak GiB, qft's ratio to each peer,
# LoRA-MFU = (4 x linear params + 6 x seq x hidden x layers) x tokens/s / 989 TFLOP/s.
# A whole table does not fit one 10-minute call (torch.compile warms up 2-3 minutes per case): pick with
#   CASES="0.6b_mb8_rc 8b_mb2" PEERS="eager liger compile qlora" bash tests/device/speed_table.sh
# Needs .carry/ (the PCRE2 .deb; the liger-kernel wheel in .carry/wheels/, bitsandbytes' in .carry/qlora/wheels/).
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist $([ "${FUSED_CHECK:-0}" = 1 ] && echo qft-fused-check)
echo "built in $SECONDS s"
# FUSED_CHECK=1: first the fused kernels against ATen in the model's steps (tests/device/fused_check.cpp).
if [ "${FUSED_CHECK:-0}" = 1 ]; then
  build-gpu/qft-fused-check all > "$OUT/fused_check.log" 2>&1; echo "fused check rc=$? at $SECONDS s"
  grep -aE '^(FAIL|PASSED|FAILED)' "$OUT/fused_check.log"
fi
QFT=build-gpu/qft-dist
W=/tmp/qft-speed
mkdir -p $W
# Peer wheels (liger-kernel, bitsandbytes) carried in .carry/wheels/ or .carry/qlora/wheels/.
WHEEL_FILES=$(ls .carry/wheels/*.whl .carry/qlora/wheels/*.whl 2>/dev/null)
if [ -n "$WHEEL_FILES" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $WHEEL_FILES \
    > "$OUT/pip.log" 2>&1 || tail -3 "$OUT/pip.log"
  export PYTHONPATH=/tmp/site
fi
# fp16 with dynamic loss scaling on the GPU (FP16_CHECK=1): a 0.6B model, 12 steps, fp16 vs bf16 losses and
# the loss scale each step.
if [ "${FP16_CHECK:-0}" = 1 ]; then
  $QFT init-model --preset 0.6B --dtype bf16 --seed 0 --output $W/model_0.6B > "$OUT/init_fp16.log" 2>&1
  random_rows $W/rows_512.jsonl 96 512
  for dtype in fp16 bf16; do
    cat > $W/dtype_$dtype.yaml <<YAML
model: {model_name_or_path: $W/model_0.6B, torch_dtype: $dtype, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows_512.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: 8, max_steps: 12, logging_steps: 1, shuffle: false}
output: {output_dir: $W/dtype_$dtype, overwrite_output_dir: true}
YAML
    $QFT $W/dtype_$dtype.yaml > "$OUT/dtype_$dtype.log" 2>&1 || { echo "$dtype failed"; grep -m2 -i error "$OUT/dtype_$dtype.log"; }
  done
  python3 - $W/dtype_fp16/trainer_log.jsonl $W/dtype_bf16/trainer_log.jsonl <<'PY'
import json, sys
rows = lambda p: [json.loads(l) for l in open(p) if '"loss"' in l]
f, b = rows(sys.argv[1]), rows(sys.argv[2])
print("FP16 losses    ", " ".join(f"{r['loss']:.4f}" for r in f))
print("BF16 losses    ", " ".join(f"{r['loss']:.4f}" for r in b))
print("FP16 loss_scale", " ".join(f"{r.get('loss_scale', 0):g}" for r in f), "| grad_norm null (skipped):",
      sum(r["grad_norm"] is None for r in f))
PY
fi
CASES=${CASES:-0.6b_mb8_rc 8b_mb2}
PEERS=${PEERS:-eager liger compile}
# name: preset micro-batch seq recompute kind
declare -A SPEC=(
  [0.6b_mb8_rc]="0.6B 8 2048 1 lora" [1.7b_mb8_rc]="1.7B 8 2048 1 lora" [8b_mb2]="8B 2 2048 0 lora"
  [8b_mb4_rc]="8B 4 2048 1 lora" [8b_seq32k_rc]="8B 1 32768 1 lora" [0.6b_full_mb8_rc]="0.6B 8 2048 1 full"
  [8b_qlora_mb4_rc]="8B 4 2048 1 qlora")
: > "$OUT/results.txt"
for case in $CASES; do
  read -r preset mb seq rc kind <<< "${SPEC[$case]}"
  model=$W/model_$preset
  [ -d $model ] || $QFT init-model --preset $preset --dtype bf16 --seed 0 --output $model > "$OUT/init_$preset.log" 2>&1
  rows=$W/rows_${seq}.jsonl
  [ -f $rows ] || random_rows $rows 64 $seq
  gc=$([ $rc = 1 ] && echo true || echo false)
  finetuning=$([ $kind = full ] && echo full || echo lora)
  four_bit=$([ $kind = qlora ] && echo ", load_in_4bit: true" || echo "")
  cat > $W/$case.yaml <<YAML
model: {model_name_or_path: $model, torch_dtype: bf16, device: cuda $four_bit}
lora: {finetuning_type: $finetuning, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $rows}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: $mb, max_steps: 8, logging_steps: 1,
           gradient_checkpointing: $gc, shuffle: false $([ "${PROFILE:-0}" = 1 ] && echo ", profile_steps: [8, 8]")}
output: {output_dir: $W/run_$case, overwrite_output_dir: true}
YAML
  if $QFT $W/$case.yaml > "$OUT/qft_$case.log" 2>&1; then
    python3 - $W/run_$case/trainer_log.jsonl $case >> "$OUT/results.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:7]  # steps 3-7 (8 may be profiled)
print(f"{sys.argv[2]} qft {statistics.median(r['tokens_per_second'] for r in rows):.0f} "
      f"{max(r['peak_memory_bytes'] for r in rows) / 2**30:.1f}")
PY
    # PROFILE=1: where step 8's GPU time went (Kineto trace, tests/tools/profile_summary.py).
    [ -f $W/run_$case/profile/trace_rank0.json ] &&
      python3 tests/tools/profile_summary.py $W/run_$case/profile/trace_rank0.json --top 12 > "$OUT/profile_$case.md" 2>&1
  else
    echo "$case qft failed: $(grep -m1 -i error "$OUT/qft_$case.log" | cut -c1-200)"
  fi
  for peer in $PEERS; do
    [ $kind = qlora ] && [ $peer != qlora ] && continue
    [ $kind != qlora ] && [ $peer = qlora ] && continue
    [ $kind = full ] && [ $peer != eager ] && continue
    full_arg=$([ $kind = full ] && echo full || echo lora)
    timeout 400 python3 tests/device/peer_train.py $peer $model $mb $seq $rc $full_arg > "$OUT/peer_${case}_$peer.log" 2>&1
    line=$(grep PEER "$OUT/peer_${case}_$peer.log")
    if [ -n "$line" ]; then
      echo "$line" | python3 -c "
import re, sys; l = sys.stdin.read(); t = re.search(r'([\d,]+) tokens/s', l).group(1).replace(',', '')
p = re.search(r'peak ([\d.]+) GiB', l).group(1); print('$case $peer', t, p)" >> "$OUT/results.txt"
    else
      echo "$case $peer failed: $(grep -m1 -iE 'error|out of memory' "$OUT/peer_${case}_$peer.log" | cut -c1-200)"
    fi
  done
  echo "$case done at $SECONDS s"
done
python3 - "$OUT/results.txt" <<'PY'
import collections, sys
SHAPES = {"0.6B": (1024, 3072, 28, 16, 8, 128), "1.7B": (2048, 6144, 28, 16, 8, 128), "8B": (4096, 12288, 36, 32, 8, 128)}
SPEC = {"0.6b_mb8_rc": ("0.6B", 2048), "1.7b_mb8_rc": ("1.7B", 2048), "8b_mb2": ("8B", 2048), "8b_mb4_rc": ("8B", 2048),
        "8b_seq32k_rc": ("8B", 32768), "0.6b_full_mb8_rc": ("0.6B", 2048), "8b_qlora_mb4_rc": ("8B", 2048)}
res = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    case, who, tps, peak = line.split()
    res[case][who] = (float(tps), float(peak))
peers = ["eager", "liger", "compile", "qlora"]
print("\n| case (1 H200) | qft tok/s (GiB) | LoRA-MFU | " + " | ".join(f"{p} tok/s (GiB) | qft/{p}" for p in peers) + " |")
print("|---" * (3 + 2 * len(peers)) + "|")
for case, r in res.items():
    preset, seq = SPEC[case]
    h, i, L, nh, nkv, d = SHAPES[preset]
    linear = L * (h * nh * d * 2 + 2 * h * nkv * d + 3 * h * i)
    mfu = lambda t: (4 * linear + 6 * seq * h * L) * t / 989e12
    q = r.get("qft")
    cells = [f"{q[0]:,.0f} ({q[1]:.1f})" if q else "—", f"{mfu(q[0]):.1%}" if q else "—"]
    for p in peers:
        if p in r:
            cells += [f"{r[p][0]:,.0f} ({r[p][1]:.1f})", f"{q[0] / r[p][0]:.2f}x" if q else "—"]
        else:
            cells += ["—", "—"]
    print(f"| {case} | " + " | ".join(cells) + " |")
PY
