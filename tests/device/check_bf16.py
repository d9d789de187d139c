"""GPU check (device machine only, not part of CI): qft's bf16 training path against transformers + PEFT
on a random-init Qwen3-0.6B-shaped model, same weights, same adapter, same batch.

Prints one line per quantity and writes results.json into --out. Exit code 1 when the bf16 loss differs
from transformers+PEFT's bf16 loss by more than 1e-2 relative.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

QWEN3_0_6B = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, max_position_embeddings=40960)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", required=True)
    ap.add_argument("--work", default="/tmp/qft-bf16")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp"))
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)
    config = Qwen3Config(**QWEN3_0_6B)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    base_dir = work / "qwen3-0.6b-random"
    model.save_pretrained(base_dir)
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS,
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    # PEFT upcasts adapters to fp32 (autocast_adapter_dtype), as qft keeps fp32 LoRA masters.
    adapter_dir = work / "adapter"
    peft_model.save_pretrained(adapter_dir)

    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
    labels = ids.clone()
    labels[:, : args.seq // 4] = -100
    batch_file = work / "batch.safetensors"
    save_file({"input_ids": ids, "labels": labels}, str(batch_file))

    # The references are loaded from the saved files, as qft loads them. (Converting the in-memory model
    # with .to(bfloat16) would also round RoPE's inv_freq buffer to bf16, which transformers never does
    # on load; that reference differs from a loaded model by ~16% in the LoRA gradients.)
    del peft_model, model
    results = {}

    def reference(dtype):
        base = Qwen3ForCausalLM.from_pretrained(base_dir, dtype=dtype).cuda()
        m = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
        m.train()
        out = m(input_ids=ids.cuda(), labels=labels.cuda())
        out.loss.backward()
        grads = {n.replace(".default", ""): p.grad.float().cpu() for n, p in m.named_parameters()
                 if p.grad is not None}
        loss = out.loss.item()
        del m, base, out
        torch.cuda.empty_cache()
        return loss, grads

    results["hf_bf16_loss"], hf_grads = reference(torch.bfloat16)
    results["hf_fp32_loss"], fp32_grads = reference(torch.float32)

    probe_out = work / "probe.safetensors"
    t0 = time.time()
    subprocess.run([args.probe, "--model", base_dir, "--adapter", adapter_dir, "--batch", batch_file,
                    "--output", probe_out, "--grads", "--dtype", "bf16", "--device", "cuda", "--no-logits"],
                   check=True)
    results["qft_probe_seconds"] = time.time() - t0
    got = load_file(str(probe_out))
    results["qft_bf16_loss"] = got["loss"].item()
    results["loss_rel_diff_vs_hf_bf16"] = abs(results["qft_bf16_loss"] - results["hf_bf16_loss"]) / abs(
        results["hf_bf16_loss"])
    results["loss_rel_diff_vs_hf_fp32"] = abs(results["qft_bf16_loss"] - results["hf_fp32_loss"]) / abs(
        results["hf_fp32_loss"])
    # LoRA gradients: both bf16 paths against the fp32 gradients (median / max over the adapter tensors).
    def summary(errs):
        errs = sorted(errs)
        return f"median {errs[len(errs) // 2]:.3e} max {errs[-1]:.3e} over {len(errs)} tensors"
    assert sorted(k for k in got if "lora_" in k) == sorted(fp32_grads), "gradient names differ from PEFT's"
    results["grad_rel_err_qft_bf16_vs_fp32"] = summary([rel(got[k], fp32_grads[k]) for k in fp32_grads])
    results["grad_rel_err_hf_bf16_vs_fp32"] = summary([rel(hf_grads[k], fp32_grads[k]) for k in fp32_grads])
    # The same probe in fp32 on the GPU (math attention path) against the fp32 reference.
    probe32 = work / "probe32.safetensors"
    subprocess.run([args.probe, "--model", base_dir, "--adapter", adapter_dir, "--batch", batch_file,
                    "--output", probe32, "--grads", "--dtype", "fp32", "--device", "cuda", "--no-logits"],
                   check=True)
    got32 = load_file(str(probe32))
    results["qft_fp32_loss_rel_diff_vs_hf_fp32"] = abs(got32["loss"].item() - results["hf_fp32_loss"]) / abs(
        results["hf_fp32_loss"])
    results["grad_rel_err_qft_fp32_vs_fp32"] = summary([rel(got32[k], fp32_grads[k]) for k in fp32_grads])
    results["shape"] = f"Qwen3-0.6B random, batch {args.batch} x seq {args.seq}, LoRA r16 all-linear"
    Path(args.out, "bf16_check.json").write_text(json.dumps(results, indent=2))
    for k, v in results.items():
        print(f"{k:32s} {v}")
    ok = results["loss_rel_diff_vs_hf_bf16"] <= 1e-2
    print("BF16 CHECK", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
