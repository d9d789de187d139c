#!/usr/bin/env bash
# QLoRA on one GPU (device tool, kind nvidia-h200): (1) qft's NF4 quantize/dequantize (model::nf4_quantize /
# nf4_dequantize through `qft-probe --nf4`, on the GPU and on the CPU) against bitsandbytes'
# quantize_4bit(quant_type='nf4', compress_statistics=True/False, blocksize=64) on random bf16 tensors:
# packed bytes, absmax (8-bit codes, nested absmax, offset) and dequantized values, and bitsandbytes'
# dequantize_4bit of qft's own state; (2) a pre-quantized directory written by `merge --save-4bit` loaded by
# transformers + bitsandbytes; (3) Qwen3-8B random-init QLoRA (NF4, double quant) mb4 seq 2048 with
# recompute, r16 all-linear, against the same run in bf16 LoRA: tokens/s and peak memory. Prints a table last.
# Needs .carry/ with Debian's libpcre2-dev .deb and the bitsandbytes wheel in .carry/qlora/wheels/ (or
# WHEELS=DIR): `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
# --platform manylinux_2_24_x86_64 -d .carry/qlora/wheels bitsandbytes==0.50.2` (43 MB; its other needs,
# torch, numpy and packaging, are in the image).
#   device run (kind nvidia-h200): bash tests/device/qlora_check.sh   (carry: [".carry"])
set -uo pipefail
source tests/device/gpu_build.sh
WHEELS=${WHEELS:-.carry/qlora/wheels}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl ||
  { echo "cannot install the wheels of $WHEELS"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
gpu_build qft-dist qft-probe
BUILD_S=$SECONDS
QFT=build-gpu/qft-dist
W=/tmp/qft-qlora-check
rm -rf $W && mkdir -p $W

# ---- (1) NF4 against bitsandbytes --------------------------------------------------------------------
python3 - $W/in.safetensors <<'PY'
import os, sys, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))  # fresh inputs every run
def edge(rows, cols):
    t = torch.randn(rows * cols, generator=g) * 0.02
    t[0:64] = 0.0; t[64:128] = 0.5; t[128:192] = -0.5; t[200] = 100.0
    t[256:320] = torch.randn(64, generator=g) * 1e-30; t[320:384] = -torch.rand(64, generator=g)
    return t.view(rows, cols)
tensors = {"edge_300x64": edge(300, 64), "odd_129x67": torch.randn(129, 67, generator=g) * 0.05,
           "q_4096x4096": torch.randn(4096, 4096, generator=g) * 0.02,
           "down_4096x12288": torch.randn(4096, 12288, generator=g) * 0.02,
           "heavy_1024x1024": torch.distributions.StudentT(3.0).sample((1024, 1024)) * 0.01}
save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, sys.argv[1])
PY
for dev in cuda cpu; do
  build-gpu/qft-probe --nf4 $W/in.safetensors --output $W/qft_${dev}_dq.safetensors --device $dev > "$OUT/probe_$dev.log" 2>&1
  build-gpu/qft-probe --nf4 $W/in.safetensors --output $W/qft_${dev}_plain.safetensors --device $dev --no-double-quant \
    >> "$OUT/probe_$dev.log" 2>&1
done
python3 - $W > "$OUT/nf4_compare.txt" 2>&1 <<'PY'
import json, sys, torch, bitsandbytes, bitsandbytes.functional as F
from safetensors.torch import load_file
W = sys.argv[1]
inp = load_file(f"{W}/in.safetensors")
print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
for dev in ("cuda", "cpu"):
    for mode, nested in (("dq", True), ("plain", False)):
        q = load_file(f"{W}/qft_{dev}_{mode}.safetensors")
        for name, a in inp.items():
            a = a.cuda()
            packed, st = F.quantize_4bit(a, blocksize=64, compress_statistics=nested, quant_type="nf4")
            ref = F.dequantize_4bit(packed, st)
            mine_packed = q[name].cuda().view(-1)
            n_bytes = packed.numel()
            byte_diff = int((packed.view(-1) != mine_packed).sum())
            absmax = q[name + ".absmax"].cuda()
            if nested:
                state = json.loads(bytes(q[name + ".quant_state.bitsandbytes__nf4"].tolist()).decode())
                code_diff = int((st.absmax != absmax).sum())
                absmax2_diff = int((st.state2.absmax != q[name + ".nested_absmax"].cuda()).sum())
                offset_diff = abs(st.offset.item() - state["nested_offset"])
                # bitsandbytes' dequantization of qft's own state (same absmax2/offset objects swapped in).
                st_mine = F.QuantState(absmax=absmax, shape=st.shape, code=st.code, blocksize=64, quant_type="nf4",
                                       dtype=st.dtype, offset=torch.tensor(state["nested_offset"], device="cuda"),
                                       state2=F.QuantState(absmax=q[name + ".nested_absmax"].cuda(),
                                                           code=q[name + ".nested_quant_map"].cuda(), blocksize=256,
                                                           dtype=torch.float32))
            else:
                code_diff = int((st.absmax != absmax).sum()); absmax2_diff = 0; offset_diff = 0.0
                st_mine = F.QuantState(absmax=absmax, shape=st.shape, code=st.code, blocksize=64, quant_type="nf4",
                                       dtype=st.dtype)
            bnb_of_mine = F.dequantize_4bit(mine_packed.view(-1, 1), st_mine)
            deq = q[name + ".dequantized"].cuda()
            value_diff = int((deq.view(torch.int16) != bnb_of_mine.view(torch.int16)).sum())
            value_vs_bnb = int((deq.view(torch.int16) != ref.view(torch.int16)).sum())
            print(f"ROW {dev} {mode} {name}: packed bytes differing {byte_diff}/{n_bytes}, absmax entries differing "
                  f"{code_diff}/{st.absmax.numel()}, absmax2 differing {absmax2_diff}, offset diff {offset_diff:.3g}, "
                  f"dequantized != bnb(qft state) {value_diff}, dequantized != bnb(bnb state) {value_vs_bnb}")
PY
NF4_RC=$?

# ---- (2) merge --save-4bit read by transformers + bitsandbytes ----------------------------------------
$QFT init-model --preset tiny --dtype bf16 --initializer-range 0.2 --seed 0 --tokenizer build-gpu/qwen3-tokenizer \
     --output $W/tiny > "$OUT/init_tiny.log" 2>&1
python3 - $W <<'PY' > "$OUT/hf_load.txt" 2>&1
import json, sys, torch
from safetensors.torch import save_file
W = sys.argv[1]
# An adapter with B = 0 (PEFT's init): the merged model is the base itself, requantized.
import os
os.makedirs(f"{W}/zero", exist_ok=True)
t = {}
for i in range(2):
    for m, (o, n) in {"self_attn.q_proj": (64, 64), "mlp.down_proj": (64, 192)}.items():
        t[f"base_model.model.model.layers.{i}.{m}.lora_A.weight"] = torch.randn(8, n) * 0.01
        t[f"base_model.model.model.layers.{i}.{m}.lora_B.weight"] = torch.zeros(o, 8)
save_file(t, f"{W}/zero/adapter_model.safetensors", metadata={"format": "pt"})
json.dump({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "down_proj"],
           "task_type": "CAUSAL_LM"}, open(f"{W}/zero/adapter_config.json", "w"))
PY
$QFT merge --base $W/tiny --adapter $W/zero --output $W/tiny4 --save-4bit > "$OUT/merge4.log" 2>&1
python3 - $W >> "$OUT/hf_load.txt" 2>&1 <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM
W = sys.argv[1]
m4 = AutoModelForCausalLM.from_pretrained(f"{W}/tiny4", device_map="cuda")
m = AutoModelForCausalLM.from_pretrained(f"{W}/tiny", dtype=torch.bfloat16, device_map="cuda")
ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], device="cuda")
kind = type(m4.model.layers[0].self_attn.q_proj).__name__
a, b = m4(input_ids=ids).logits.float(), m(input_ids=ids).logits.float()
print(f"HFLOAD q_proj is {kind}; logits rel. diff 4-bit vs bf16 {((a - b).abs().max() / b.abs().max()).item():.3e}")
PY
HF_RC=$?

# ---- (3) Qwen3-8B QLoRA mb4 recompute vs bf16 LoRA ---------------------------------------------------
$QFT init-model --preset 8B --dtype bf16 --seed 0 --output $W/model8b > "$OUT/init8b.log" 2>&1 || { tail "$OUT/init8b.log"; exit 1; }
random_rows $W/rows.jsonl 48 2048
speed() {  # name, load_in_4bit
  cat > $W/$1.yaml <<YAML
model: {model_name_or_path: $W/model8b, torch_dtype: bf16, device: cuda, load_in_4bit: $2}
lora: {r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}
data: {pretokenized: $W/rows.jsonl}
training: {learning_rate: 1.0e-4, per_device_train_batch_size: 4, max_steps: 8, logging_steps: 1,
           gradient_checkpointing: true, shuffle: false, save_steps: 0}
output: {output_dir: $W/run_$1, overwrite_output_dir: true}
YAML
  timeout 420 $QFT $W/$1.yaml > "$OUT/train_$1.log" 2>&1; echo "rc=$?"
  cp $W/run_$1/trainer_log.jsonl "$OUT/$1.jsonl" 2>/dev/null
}
QLORA_RC=$(speed qlora true)
BF16_RC=$(speed bf16 false)
python3 - "$OUT" > "$OUT/speed.txt" <<'PY'
import json, statistics, sys
out = sys.argv[1]
for name in ("qlora", "bf16"):
    try:
        rows = [json.loads(l) for l in open(f"{out}/{name}.jsonl") if '"loss"' in l]
    except OSError:
        print(f"| {name} | no log | | |"); continue
    tps = statistics.median(r["tokens_per_second"] for r in rows[2:]) if len(rows) > 2 else float("nan")
    peak = max(r["peak_memory_bytes"] for r in rows) / 2**30
    print(f"| Qwen3-8B {name} LoRA r16 mb4 seq2048 recompute | {tps:,.0f} tok/s | peak {peak:.1f} GiB | "
          f"loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f} |")
PY

echo
grep -h "^ROW\|^bitsandbytes" "$OUT/nf4_compare.txt"; tail -3 "$OUT/nf4_compare.txt" | grep -v "^ROW"
echo
echo "| check | result |"
echo "|---|---|"
echo "| build (s) | $BUILD_S |"
echo "| NF4 vs bitsandbytes (rc $NF4_RC) | $(grep -c '^ROW' "$OUT/nf4_compare.txt") cases; packed bytes differing in $(grep '^ROW' "$OUT/nf4_compare.txt" | grep -vc 'packed bytes differing 0/') ; dequantized != bnb(qft state) in $(grep '^ROW' "$OUT/nf4_compare.txt" | grep -vc 'bnb(qft state) 0,') |"
echo "| merge --save-4bit loaded by transformers+bnb (rc $HF_RC) | $(grep HFLOAD "$OUT/hf_load.txt" || tail -1 "$OUT/hf_load.txt") |"
echo "| 8B QLoRA / bf16 runs | $QLORA_RC / $BF16_RC |"
cat "$OUT/speed.txt"
nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | sed 's/^/| GPU | /; s/$/ |/'
