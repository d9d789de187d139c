"""The single-GPU peers of issue 8's speed table: transformers + PEFT LoRA r16 alpha32 on all seven projections
(or full fine-tuning), bf16, sdpa, fused AdamW, random weights at the shape of a config.json, fixed random tokens,
labels = inputs; median step after warm-up. Modes:
  eager    plain transformers + PEFT
  compile  torch.compile(model) (3 warm-up steps: compilation)
  liger    liger_kernel's apply_liger_kernel_to_qwen3(rope, swiglu, rms_norm, fused_linear_cross_entropy)
  qlora    the model saved and reloaded with BitsAndBytesConfig(nf4, double quant, bf16 compute), then PEFT
Gradient checkpointing (recompute) is enabled with use_reentrant=False and checked to be in effect (the model's
is_gradient_checkpointing flag after enabling, and the decoder layers' checkpointing attribute).
    python3 tests/device/peer_train.py MODE CONFIG_DIR MICRO_BATCH SEQ RECOMPUTE(0|1) [full] [steps]
Prints: PEER <mode> ...: <tokens/s> tokens/s, <s> s/step, peak <GiB> GiB
"""
import statistics
import sys
import tempfile
import time

import torch
from transformers import AutoConfig, Qwen3ForCausalLM

mode, config_dir, micro_batch, seq, recompute = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5] == "1"
full = len(sys.argv) > 6 and sys.argv[6] == "full"
steps = int(sys.argv[7]) if len(sys.argv) > 7 else 8
config = AutoConfig.from_pretrained(config_dir)
config._attn_implementation = "sdpa"
torch.manual_seed(0)
if mode == "liger":
    from liger_kernel.transformers import apply_liger_kernel_to_qwen3
    apply_liger_kernel_to_qwen3(rope=True, swiglu=True, rms_norm=True, fused_linear_cross_entropy=True)
if mode == "qlora":
    from transformers import BitsAndBytesConfig
    with torch.device("cuda"):
        dense = Qwen3ForCausalLM(config).to(torch.bfloat16)
    tmp = tempfile.mkdtemp()
    dense.save_pretrained(tmp)
    del dense
    torch.cuda.empty_cache()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = Qwen3ForCausalLM.from_pretrained(tmp, quantization_config=quant, torch_dtype=torch.bfloat16,
                                             attn_implementation="sdpa", device_map={"": 0})
else:
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
if recompute:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if not full:
        model.enable_input_require_grads()  # PEFT + checkpointing: the checkpointed blocks need a grad input
    layers = model.model.layers
    assert model.is_gradient_checkpointing and all(getattr(l, "gradient_checkpointing", False) for l in layers), \
        "gradient checkpointing is not in effect"
if not full:
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
if mode == "compile":
    model = torch.compile(model)
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
ids = torch.randint(0, config.vocab_size, (micro_batch, seq), device="cuda")
warmup = 3 if mode == "compile" else 2
times = []
for step in range(steps + warmup - 2):
    torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
step_s = statistics.median(times[warmup:])
print(f"PEER {mode} mb={micro_batch} seq={seq} recompute={int(recompute)} {'full' if full else 'lora'}: "
      f"{micro_batch * seq / step_s:,.0f} tokens/s, {step_s:.3f} s/step, "
      f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
