"""The peer for the data-parallel benchmark: transformers + PEFT under torch DDP (torchrun), LoRA r16 alpha32 on
all seven projections, bf16, sdpa, fused AdamW, random weights at the shape of a config.json, fixed random
tokens; prints the median step's tokens/s over all ranks and the peak memory of rank 0.
    torchrun --nproc-per-node N tests/device/peer_ddp.py CONFIG_DIR MICRO_BATCH SEQ STEPS
"""
import os
import statistics
import sys
import time

import torch
import torch.distributed as dist
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, Qwen3ForCausalLM

config_dir, micro_batch, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rank, world = int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
torch.cuda.set_device(rank)
if world > 1:
    dist.init_process_group("nccl")
config = AutoConfig.from_pretrained(config_dir)
config._attn_implementation = "sdpa"
torch.manual_seed(0)
with torch.device("cuda"):
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=[
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
if world > 1:
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank])
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
ids = torch.randint(0, config.vocab_size, (micro_batch, seq), device="cuda", generator=None)
times = []
for step in range(steps):
    torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
step_s = statistics.median(times[2:])
if rank == 0:
    print(f"PEER transformers+peft DDP gpus={world} mb={micro_batch} seq={seq}: "
          f"{micro_batch * seq * world / step_s:,.0f} tokens/s, {step_s:.3f} s/step, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
if world > 1:
    dist.destroy_process_group()
