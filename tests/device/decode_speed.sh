#!/usr/bin/env bash
# Decode speed on one GPU: qft-dist generate against transformers' generate on the same random-init
# Qwen3 model (bf16, `qft-dist init-model --preset 0.6B|8B`), at batch 1 and 32, measured in the same call.
# Every prompt is PROMPT_TOKENS tokens of raw text and both sides generate exactly NEW_TOKENS tokens
# (qft: --ignore-eos; transformers: min_new_tokens), greedy. tokens/s = generated tokens / wall time of
# the generate call (prefill included), on the second of two batches (the first warms up). Prints a table.
#   device run (kind nvidia-h200): bash tests/device/decode_speed.sh   (carry: [".carry"])
#   MODELS="0.6B" BATCHES="1 32" NEW_TOKENS=128 PROMPT_TOKENS=128 to change what is measured; a dry run on
#   a CPU machine: MODELS=tiny BATCHES="1 4" NEW_TOKENS=8 PROMPT_TOKENS=16 DEVICE=cpu DTYPE=fp32 BUILD=build JOBS=1
set -uo pipefail
OUT=${OUT:-/tmp/qft-device-out}
MODELS=${MODELS:-"0.6B 8B"}
BATCHES=${BATCHES:-"1 32"}
NEW_TOKENS=${NEW_TOKENS:-128}
PROMPT_TOKENS=${PROMPT_TOKENS:-128}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
BUILD=${BUILD:-build-gpu}
JOBS=${JOBS:-16}
mkdir -p "$OUT"
SECONDS=0
if [ ! -f $BUILD/build.ninja ]; then
  PCRE2_DIR=/tmp/pcre2
  mkdir -p $PCRE2_DIR && dpkg -x .carry/libpcre2-dev_*.deb $PCRE2_DIR
  TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
  cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DQFT_PCRE2_ROOT=$PCRE2_DIR/usr \
        -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" > "$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
fi
cmake --build $BUILD -j $JOBS --target qft-dist > "$OUT/build.log" 2>&1 || { grep -m 20 -A5 error "$OUT/build.log"; exit 1; }
echo "build: ${SECONDS}s"
QFT=$BUILD/qft-dist
W=/tmp/qft-decode-speed
mkdir -p $W
RESULTS=$OUT/decode_speed.tsv
: > "$RESULTS"
for MODEL in $MODELS; do
  DIR=$W/model-$MODEL-$DTYPE
  [ -f $DIR/config.json ] || $QFT init-model --preset $MODEL --dtype $DTYPE --seed 0 --tokenizer $BUILD/qwen3-tokenizer \
                                 --output $DIR > "$OUT/init-$MODEL.log" 2>&1 || { tail "$OUT/init-$MODEL.log"; exit 1; }
  for B in $BATCHES; do
    # 2*B prompts of PROMPT_TOKENS random tokens each, as text that re-encodes to exactly that many tokens.
    python3 - "$DIR" "$W/prompts-$B.jsonl" "$B" "$PROMPT_TOKENS" <<'PY'
import json, random, sys
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained(sys.argv[1])
r = random.Random(0)
words = [w for w in (tok.decode([i]) for i in range(1000, 20000)) if w.strip().isalpha() and w.startswith(" ")]
with open(sys.argv[2], "w") as f:
    for _ in range(2 * int(sys.argv[3])):
        ids = []
        while len(ids) < int(sys.argv[4]):
            ids = tok("".join(r.choice(words) for _ in range(int(sys.argv[4]))))["input_ids"][: int(sys.argv[4])]
        f.write(json.dumps({"text": tok.decode(ids)}) + "\n")
PY
    $QFT generate --model $DIR --device $DEVICE --dtype $DTYPE --greedy --ignore-eos --max-new-tokens $NEW_TOKENS \
         --batch-size $B --input $W/prompts-$B.jsonl --output $W/qft-$MODEL-$B.jsonl > "$OUT/qft-$MODEL-$B.log" 2>&1 ||
      { tail "$OUT/qft-$MODEL-$B.log"; exit 1; }
    QFT_TPS=$(grep -o "batch of [0-9]* prompts: [0-9]* new tokens in [0-9.]* s, [0-9.]* tokens/s" "$OUT/qft-$MODEL-$B.log" |
              tail -1 | sed 's/.*s, \([0-9.]*\) tokens\/s/\1/')
    HF_TPS=$(python3 - "$DIR" "$W/prompts-$B.jsonl" "$B" "$NEW_TOKENS" "$DEVICE" "$DTYPE" 2>"$OUT/hf-$MODEL-$B.log" <<'PY'
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, prompts, B, N, device = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[sys.argv[6]]
sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
texts = [json.loads(l)["text"] for l in open(prompts)]
rate = 0.0
for batch in (texts[:B], texts[B:2 * B]):  # the first batch warms up
    enc = tok(batch, return_tensors="pt", padding=True).to(device)
    sync()
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=N, min_new_tokens=N, pad_token_id=tok.pad_token_id)
    sync()
    rate = (out.shape[1] - enc["input_ids"].shape[1]) * B / (time.perf_counter() - t)
print(f"{rate:.1f}")
PY
    ) || { tail "$OUT/hf-$MODEL-$B.log"; HF_TPS=failed; }
    printf "%s\t%s\t%s\t%s\n" "$MODEL" "$B" "$QFT_TPS" "$HF_TPS" | tee -a "$RESULTS"
  done
done
echo
echo "| model | batch | prompt tokens | new tokens | qft tokens/s | transformers tokens/s |"
echo "|---|---|---|---|---|---|"
while IFS=$'\t' read -r M B Q H; do
  echo "| $M | $B | $PROMPT_TOKENS | $NEW_TOKENS | $Q | $H |"
done < "$RESULTS"
nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1
echo "total: ${SECONDS}s"
