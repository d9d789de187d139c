#!/usr/bin/env bash
# The fused kernels in the model's path, on one GPU (device tool, kind nvidia-h200): qft-fused-check
# (the same steps with training.use_fused_kernels on and off must agree; NF4 bit-exact; AdamW; speed of a
# 2-layer step and of FA2 vs cuDNN attention), then qft-dist on a 0.6B-shaped model with the kernels on
# and off (tokens/s, peak memory). Needs .carry/ (the PCRE2 .deb).
#   device run: bash tests/device/fused_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
gpu_build qft-dist qft-fused-check
echo "built in $SECONDS s"
build-gpu/qft-fused-check ${FUSED_PART:-all} 2>&1 | tee "$OUT/fused_check.log" | grep -E "^(FAIL|PASSED|FAILED)"
rc=${PIPESTATUS[0]}
echo "fused check rc=$rc at $SECONDS s"
QFT=build-gpu/qft-dist
W=/tmp/qft-fused
mkdir -p $W
: > "$OUT/runs.txt"
for preset in ${PRESETS:-0.6B}; do
  $QFT init-model --preset $preset --dtype bf16 --seed 0 --output $W/model_$preset > "$OUT/init_$preset.log" 2>&1
  [ -f $W/rows.jsonl ] || random_rows $W/rows.jsonl 64 2048
  for fused in true false; do
    cat > $W/run.yaml <<YAML
model: {model_name_or_path: $W/model_$preset, torch_dtype: bf16, device: cuda}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows.jsonl}
training: {learning_rate: 1.0e-5, per_device_train_batch_size: ${MB:-8}, max_steps: 8, logging_steps: 1,
           gradient_checkpointing: true, shuffle: false, use_fused_kernels: $fused}
output: {output_dir: $W/run_${preset}_$fused, overwrite_output_dir: true}
YAML
    $QFT $W/run.yaml > "$OUT/qft_${preset}_$fused.log" 2>&1 || { echo "qft $preset fused=$fused failed"; tail -5 "$OUT/qft_${preset}_$fused.log"; }
    python3 - $W/run_${preset}_$fused/trainer_log.jsonl "$preset mb${MB:-8} rc fused=$fused" >> "$OUT/runs.txt" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
t = rows[2:]
losses = " ".join("%.4f" % r["loss"] for r in rows)
print(f"| {sys.argv[2]} | {statistics.median(r['tokens_per_second'] for r in t):,.0f} tok/s | "
      f"{max(r['peak_memory_bytes'] for r in t) / 2**30:.1f} GiB | losses {losses} |")
PY
  done
done
echo "done at $SECONDS s"
grep -a '^|' "$OUT/fused_check.log"
cat "$OUT/runs.txt"
exit $rc
