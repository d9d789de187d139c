#!/usr/bin/env bash
# The README demo: a tiny random Qwen3 with the real tokenizer, LoRA-trained on the bundled demo chat data
# (Chinese/English, persona system prompt, tool calls, <think> reasoning), on CPU or the GPU if present.
# Ends with the adapter written and the loss curve printed.
set -euo pipefail
BUILD_DIR=${1:-build}
QFT="$BUILD_DIR/qft-dist"
cd "$(dirname "$0")/.."
[ -x "$QFT" ] || { echo "demo: $QFT not found; run make demo (or make build) first" >&2; exit 1; }

TOKENIZER_DIR="$BUILD_DIR/qwen3-tokenizer"   # unpacked from tests/fixtures at configure time
mkdir -p demo-output
if [ ! -f demo-output/model/config.json ]; then
  # A wider init than transformers' 0.02 so that the tied embedding gives logits a random model can move.
  "$QFT" init-model --preset tiny --dtype fp32 --initializer-range 0.2 --seed 0 \
         --tokenizer "$TOKENIZER_DIR" --output demo-output/model
fi
"$QFT" configs/demo.yaml

echo
echo "evaluation on the training data (mean token loss over the assistant targets):"
echo "  base model:      $("$QFT" eval configs/demo.yaml 2>/dev/null)"
echo "  with the adapter: $("$QFT" eval configs/demo.yaml --adapter demo-output/run 2>/dev/null)"
echo "adapter: $(ls demo-output/run/adapter_config.json demo-output/run/adapter_model.safetensors | tr '\n' ' ')"
echo "loss curve (demo-output/run/trainer_log.jsonl):"
python3 - <<'PY'
import json
rows = [json.loads(l) for l in open("demo-output/run/trainer_log.jsonl") if '"loss"' in l]
top = max(r["loss"] for r in rows)
for r in rows:
    bar = "#" * max(1, int(50 * r["loss"] / top))
    print(f"step {r['step']:4d}  loss {r['loss']:7.4f}  {bar}")
PY
