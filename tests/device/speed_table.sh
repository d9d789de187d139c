#!/usr/bin/env bash
# Issue 8's speed table on one GPU (device tool, kind nvidia-h200), qft and its peers in the same call:
# transformers + PEFT eager, + Liger kernels, under torch.compile, and for QLoRA + bitsandbytes
# (tests/device/peer_train.py). Random-init Qwen3 shapes, seq 2048 unless said, LoRA r16 alpha32 on all seven
# projections, bf16, fused AdamW. Prints one table last: tokens/s, peak GiB, qft's ratio to each peer,
# LoRA-MFU = (4 x linear params + 6 x seq x hidden x layers) x tokens/s / 989 TFLOP/s.
# A whole table does not fit one 10-minute call (torch.compile warms up 2-3 minutes per case): pick with
#   CASES="0.6b_mb8_rc 8b_mb2" PEERS="eager liger compile qlora" bash tests/device/speed_table.sh
# (PEERS_<case>, dots as underscores, picks another set for one case: PEERS_0_6b_full_mb8_rc=eager).
# Optional parts: FUSED_CHECK=1 (qft-fused-check first), PROFILE=1 (step 8 of each qft case profiled and
# summarised), LONG_SEQ=N [LONG_LAYERS=4] (one long sequence), QLORA32=1 (Qwen3-32B QLoRA), DEADLINE=s.
# Needs .carry/ (the PCRE2 .deb; the liger-kernel wheel in .carry/wheels/, bitsandbytes' in .carry/qlora/wheels/).
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist $([ "${FUSED_CHECK:-0}" = 1 ] && echo qft-fused-check)
echo "built in $SECONDS s"
# FUSED_CHECK=1: first the fused kernels against ATen in the model's steps (tests/device/fused_check.cpp).
if [ "${FUSED_CHECK:-0}" = 1 ]; then
  build-gpu/qft-fused-check ${FUSED_PART:-check} > "$OUT/fused_check.log" 2>&1; echo "fused check rc=$? at $SECONDS s"
  grep -aE '^(FAIL|PASSED|FAILED)' "$OUT/fused_check.log"
fi
QFT=build-gpu/qft-dist
W=/tmp/qft-speed
mkdir -p $W
# Peer wheels (liger-kernel, bitsandbytes) carried in .carry/wheels/ or .carry/qlora/wheels/.
WHEEL_FILES=$(ls .carry/wheels/*.whl .carry/qlora/wheels/*.whl 2>/dev/null)
if [ -n "$WHEEL_FILES" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $WHEEL_FILES \
    > "$W/pip.log" 2>&1 || tail -3 "$W/pip.log"
  export PYTHONPATH=/tmp/site
fi
# fp16 with dynamic loss scaling on the GPU (FP16_CHECK=1): a 0.6B model, 12 steps, fp16 vs bf16 losses and
# the loss scale each step.
if [ "${FP16_CHECK:-0}" = 1 ]; then
  $QFT init-model --preset 0.6B --dtype bf16 --seed 0 --output $W/model_0.6B > "$W/init_fp16.log" 2>&1
  random_rows $W/rows_512.jsonl 96 512
  for dtype in fp16 bf16; do
    cat > $W/dtype_$dtype.yaml <<YAML
model: {model_name_or_path: $W/model_0.6B, torch_dtype: $dtype, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows_512.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: 8, max_steps: 12, logging_steps: 1, shuffle: false}
output: {output_dir: $W/dtype_$dtype, overwrite_output_dir: true}
YAML
    $QFT $W/dtype_$dtype.yaml > "$W/dtype_$dtype.log" 2>&1 || { echo "$dtype failed"; grep -m2 -i error "$W/dtype_$dtype.log"; }
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
CASES=${CASES-0.6b_mb8_rc 8b_mb2}
PEERS=${PEERS-eager liger compile}
# name: preset micro-batch seq recompute kind. A case is one of these, or one with recompute ("_rc")
# followed by options: _off offloads the checkpointed layer inputs to pinned host memory
# (training.activation_offloading), _nN checkpoints only the first N layers (training.recompute_num_layers:
# N; the others recompute selectively), _res keeps each checkpointed layer's mid residual too
# (training.checkpoint_residuals); or "_sel" in place of "_rc": recompute selectively
# (training.recompute_granularity: selective). E.g. 8b_mb4_rc_off_n32_res, 1.7b_mb8_sel.
declare -A SPEC=(
  [0.6b_mb8_rc]="0.6B 8 2048 1 lora" [1.7b_mb8_rc]="1.7B 8 2048 1 lora" [8b_mb2]="8B 2 2048 0 lora"
  [8b_mb4_rc]="8B 4 2048 1 lora" [8b_seq32k_rc]="8B 1 32768 1 lora" [0.6b_full_mb8_rc]="0.6B 8 2048 1 full"
  [8b_qlora_mb4_rc]="8B 4 2048 1 qlora")
# The SPEC entry a case name's options build on.
base_case() { sed -E 's/_sel$/_rc/; s/_(off|n[0-9]+|res)//g' <<< "$1"; }
: > "$OUT/results.txt"
: > $W/spec.txt
# Logs stay in $W (the device tool returns at most 8 files); results.txt grows line by line and is
# echoed as it grows. DEADLINE (s): cases and parts not started by then are skipped.
DEADLINE=${DEADLINE:-480}
for case in $CASES; do
  [ $SECONDS -gt $DEADLINE ] && { echo "$case skipped (deadline)"; continue; }
  spec=${SPEC[$(base_case $case)]:-}
  [ -n "$spec" ] || { echo "$case: unknown case"; continue; }
  read -r preset mb seq rc kind <<< "$spec"
  echo "$case $spec" >> $W/spec.txt
  model=$W/model_$preset
  [ -d $model ] || $QFT init-model --preset $preset --dtype bf16 --seed 0 --output $model > "$W/init_$preset.log" 2>&1
  rows=$W/rows_${seq}.jsonl
  [ -f $rows ] || random_rows $rows 64 $seq
  gc=$([ $rc = 1 ] && echo true || echo false)
  finetuning=$([ $kind = full ] && echo full || echo lora)
  four_bit=$([ $kind = qlora ] && echo ", load_in_4bit: true" || echo "")
  offload=$([[ $case == *_off* ]] && echo ", activation_offloading: true" || echo "")
  [[ $case =~ _n([0-9]+)(_|$) ]] && offload="$offload, recompute_num_layers: ${BASH_REMATCH[1]}"
  [[ $case == *_res ]] && offload="$offload, checkpoint_residuals: true"
  [[ $case == *_sel ]] && offload=", recompute_granularity: selective"
  cat > $W/$case.yaml <<YAML
model: {model_name_or_path: $model, torch_dtype: bf16, device: cuda $four_bit}
lora: {finetuning_type: $finetuning, r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $rows}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: $mb, max_steps: 8, logging_steps: 1,
           gradient_checkpointing: $gc, shuffle: false $offload $([ "${PROFILE:-0}" = 1 ] && echo ", profile_steps: [8, 8]")}
output: {output_dir: $W/run_$case, overwrite_output_dir: true}
YAML
  if $QFT $W/$case.yaml > "$W/qft_$case.log" 2>&1; then
    python3 - $W/run_$case/trainer_log.jsonl $case >> "$OUT/results.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][2:7]  # steps 3-7 (8 may be profiled)
print(f"{sys.argv[2]} qft {statistics.median(r['tokens_per_second'] for r in rows):.0f} "
      f"{max(r['peak_memory_bytes'] for r in rows) / 2**30:.1f}")
PY
    # PROFILE=1: where step 8's GPU time went (Kineto trace, tests/tools/profile_summary.py).
    [ -f $W/run_$case/profile/trace_rank0.json ] &&
      python3 tests/tools/profile_summary.py $W/run_$case/profile/trace_rank0.json --top 8 --gaps 12 > "$OUT/profile_$case.md" 2>&1
  else
    echo "$case qft failed:"; grep -m3 -iE "error|out of memory" "$W/qft_$case.log" | cut -c1-300
  fi
  # PEERS_<case> (dots as underscores), when set, replaces PEERS for that case.
  peers_var="PEERS_${case//./_}"
  for peer in ${!peers_var-$PEERS}; do
    [ $kind = qlora ] && [ $peer != qlora ] && continue
    [ $kind != qlora ] && [ $peer = qlora ] && continue
    [ $kind = full ] && [ $peer != eager ] && continue
    full_arg=$([ $kind = full ] && echo full || echo lora)
    timeout 400 python3 tests/device/peer_train.py $peer $model $mb $seq $rc $full_arg > "$W/peer_${case}_$peer.log" 2>&1
    line=$(grep PEER "$W/peer_${case}_$peer.log")
    if [ -n "$line" ]; then
      echo "$line" | python3 -c "
import re, sys; l = sys.stdin.read(); t = re.search(r'([\d,]+) tokens/s', l).group(1).replace(',', '')
p = re.search(r'peak ([\d.]+) GiB', l).group(1); print('$case $peer', t, p)" >> "$OUT/results.txt"
    else
      echo "$case $peer failed: $(grep -m1 -iE 'error|out of memory' "$W/peer_${case}_$peer.log" | cut -c1-200)"
    fi
  done
  echo "$case done at $SECONDS s: $(grep "^$case " "$OUT/results.txt" | tr '\n' ';')"
done
# LONG_SEQ=N: one step of one N-token sequence through an 8B-shaped model of LONG_LAYERS (4) layers
# (attention is quadratic: a 36-layer step at 524,288 tokens takes longer than one device call), with
# gradient checkpointing, tiled_mlp and activation_offloading; peak memory and the start-up memory plan.
if [ -n "${LONG_SEQ:-}" ] && [ $SECONDS -le $DEADLINE ]; then
  python3 - $W/long_config.json ${LONG_LAYERS:-4} <<'PY'
import json, sys
json.dump({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 151936, "hidden_size": 4096,
           "intermediate_size": 12288, "num_hidden_layers": int(sys.argv[2]), "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
           "max_position_embeddings": 524288, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "rope_scaling": {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 32768}},
          open(sys.argv[1], "w"))
PY
  $QFT init-model --config $W/long_config.json --dtype bf16 --seed 0 --output $W/model_long > "$W/init_long.log" 2>&1 ||
    tail -3 "$W/init_long.log"
  random_rows $W/rows_long.jsonl 1 $LONG_SEQ
  cat > $W/long.yaml <<YAML
model: {model_name_or_path: $W/model_long, torch_dtype: bf16, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows_long.jsonl}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: 1, max_steps: 1, logging_steps: 1, shuffle: false,
           gradient_checkpointing: true, tiled_mlp: true, activation_offloading: true}
output: {output_dir: $W/run_long, overwrite_output_dir: true}
YAML
  if timeout $((DEADLINE + 100 - SECONDS)) $QFT $W/long.yaml > "$W/qft_long.log" 2>&1; then
    python3 - $W/run_long/trainer_log.jsonl "${LONG_LAYERS:-4}" "$LONG_SEQ" <<'PY' | tee -a "$OUT/results_extra.txt"
import json, sys
r = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][-1]
print(f"LONG 8B-shaped, {sys.argv[2]} layers, one sequence of {int(sys.argv[3]):,} tokens, checkpointing + tiled_mlp + "
      f"activation_offloading: loss {r['loss']:.4f}, {r['tokens_per_second']:,.0f} tok/s, peak {r['peak_memory_bytes'] / 2**30:.1f} GiB")
PY
  else
    echo "LONG failed (rc $?):"; grep -m3 -iE "error|out of memory" "$W/qft_long.log" | cut -c1-300
  fi
  grep -m2 -i "memory" "$W/qft_long.log" | cut -c1-300 | tee -a "$OUT/results_extra.txt"
fi
# QLORA32=1: Qwen3-32B QLoRA (NF4 made on the GPU by init-model --device cuda --save-4bit), seq 2048, micro-batch 1,
# recompute, 4 steps: tokens/s and peak memory (issue 8's target: <= 24 GiB).
if [ "${QLORA32:-0}" = 1 ] && [ $SECONDS -le $DEADLINE ]; then
  timeout 240 $QFT init-model --preset 32B --save-4bit --device cuda --seed 0 --output $W/model_32b_4bit > "$W/init_32b.log" 2>&1 ||
    { echo "32B init failed:"; tail -3 "$W/init_32b.log"; }
  echo "32B 4-bit written at $SECONDS s ($(du -sh $W/model_32b_4bit | cut -f1))"
  cat > $W/q32.yaml <<YAML
model: {model_name_or_path: $W/model_32b_4bit, torch_dtype: bf16, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows_2048.jsonl}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: 1, max_steps: 4, logging_steps: 1, shuffle: false,
           gradient_checkpointing: true}
output: {output_dir: $W/run_q32, overwrite_output_dir: true}
YAML
  [ -f $W/rows_2048.jsonl ] || random_rows $W/rows_2048.jsonl 64 2048
  if timeout 200 $QFT $W/q32.yaml > "$W/qft_q32.log" 2>&1; then
    python3 - $W/run_q32/trainer_log.jsonl <<'PY' | tee -a "$OUT/results_extra.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print(f"QLORA32 Qwen3-32B NF4 QLoRA r16 all-linear, seq 2048, mb 1, recompute: "
      f"{statistics.median(r['tokens_per_second'] for r in rows[1:]):,.0f} tok/s, peak "
      f"{max(r['peak_memory_bytes'] for r in rows) / 2**30:.1f} GiB, losses {' '.join('%.4f' % r['loss'] for r in rows)}")
PY
  else
    echo "QLORA32 failed:"; grep -m3 -iE "error|out of memory" "$W/qft_q32.log" | cut -c1-300
  fi
fi
python3 - "$OUT/results.txt" $W/spec.txt <<'PY'
import collections, sys
SHAPES = {"0.6B": (1024, 3072, 28, 16, 8, 128), "1.7B": (2048, 6144, 28, 16, 8, 128), "8B": (4096, 12288, 36, 32, 8, 128)}
# The shapes of the cases run (name preset mb seq rc kind), as the loop above found them.
SPEC = {name: (preset, int(seq)) for name, preset, mb, seq, rc, kind in (l.split() for l in open(sys.argv[2]))}
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
