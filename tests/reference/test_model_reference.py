"""qft's Qwen3 + LoRA numbers against transformers + peft (the reference implementation) on CPU, fp32.

Three tiny configurations cover GQA ratios 2 and 4 (and 1), tied and untied embeddings, and
head_dim != hidden_size / num_attention_heads. For each one:
  * logits of base + adapter (relative error <= 1e-5),
  * LoRA gradients of the mean token loss (relative error <= 1e-4),
  * 20 AdamW steps with gradient accumulation 2, clipping and a warmup + linear schedule: every adapter
    tensor (<= 1e-4) and the loss curve (<= 1e-5),
  * peft loads the adapter qft trained and reproduces qft's logits,
  * transformers loads the model `qft-dist merge` wrote and reproduces them too.
"""
import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run

from transformers import Qwen3Config, Qwen3ForCausalLM, get_scheduler  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402

CONFIGS = {
    # GQA ratio 2, tied embeddings, head_dim (16) != hidden/heads (12)
    "gqa2_tied": dict(vocab_size=128, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    # GQA ratio 4, untied, head_dim (12) != hidden/heads (8)
    "gqa4_untied": dict(vocab_size=160, hidden_size=64, intermediate_size=80, num_hidden_layers=3,
                        num_attention_heads=8, num_key_value_heads=2, head_dim=12, tie_word_embeddings=False),
    # no GQA (ratio 1), untied, head_dim == hidden/heads
    "mha_untied": dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, head_dim=8, tie_word_embeddings=False),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rel_err(a, b):
    a = a.double()
    b = b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def make_base(tmp_path, name, seed=0):
    torch.manual_seed(seed)
    config = Qwen3Config(**CONFIGS[name], rope_theta=10000.0, rms_norm_eps=1e-6, max_position_embeddings=256)
    model = Qwen3ForCausalLM(config).float().eval()
    # Norm weights are ones at init; perturb them so that a wrong norm placement cannot hide.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    base_dir = tmp_path / f"{name}-base"
    model.save_pretrained(base_dir, safe_serialization=True)
    return model, base_dir


def make_adapter(model, adapter_dir, seed=1, r=4, alpha=8, random_b=True, use_rslora=False):
    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS,
                     init_lora_weights=not random_b, use_rslora=use_rslora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(adapter_dir)
    return peft_model


def make_batch(vocab, batch=2, seq=11, seed=2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    labels = ids.clone()
    labels[:, :3] = -100  # a prompt that is not trained on
    labels[1, 7] = -100
    return ids, labels


def peft_eval_model(base_dir, adapter_dir, trainable=False):
    base = Qwen3ForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="eager")
    return PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_lora_gradients(tmp_path, probe_bin, name):
    model, base_dir = make_base(tmp_path, name)
    adapter_dir = tmp_path / "adapter"
    make_adapter(model, adapter_dir, use_rslora=(name == "mha_untied"))
    ids, labels = make_batch(CONFIGS[name]["vocab_size"])

    ref = peft_eval_model(base_dir, adapter_dir, trainable=True)
    out = ref(input_ids=ids, labels=labels)
    out.loss.backward()
    ref_grads = {}
    for n, p in ref.named_parameters():
        if p.grad is not None:
            ref_grads[n.replace(".default", "")] = p.grad.detach()

    batch_file = tmp_path / "batch.safetensors"
    save_file({"input_ids": ids, "labels": labels}, str(batch_file))
    for checkpointing in (False, True):
        result_file = tmp_path / f"probe-{checkpointing}.safetensors"
        cmd = [probe_bin, "--model", base_dir, "--adapter", adapter_dir, "--batch", batch_file,
               "--output", result_file, "--grads"]
        if checkpointing:
            cmd.append("--gradient-checkpointing")
        run(cmd)
        got = load_file(str(result_file))
        assert rel_err(got["logits"], out.logits.detach()) <= 1e-5
        assert abs(got["loss"].item() - out.loss.item()) <= 1e-5 * abs(out.loss.item())
        lora_keys = [k for k in got if "lora_" in k]
        assert sorted(lora_keys) == sorted(ref_grads), "gradient names differ from PEFT's"
        for k in lora_keys:
            err = rel_err(got[k], ref_grads[k])
            assert err <= 1e-4, f"{k}: relative error {err:.3e}"


def write_pretokenized(path, rows):
    with open(path, "w") as f:
        for ids, labels in rows:
            f.write(json.dumps({"input_ids": ids.tolist(), "labels": labels.tolist()}) + "\n")


def reference_training(model, rows, steps, micro_batch, accumulation, lr, weight_decay, max_grad_norm,
                       warmup_steps):
    """HF Trainer semantics by hand: token-weighted loss over the whole step, clip, AdamW, LambdaLR."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    sched = get_scheduler("linear", opt, num_warmup_steps=warmup_steps, num_training_steps=steps)
    losses = []
    cursor = 0
    for _ in range(steps):
        micro = []
        for _ in range(accumulation):
            chunk = rows[cursor:cursor + micro_batch]
            cursor += micro_batch
            micro.append((torch.stack([r[0] for r in chunk]), torch.stack([r[1] for r in chunk])))
        n_items = sum(int((lab[:, 1:] != -100).sum()) for _, lab in micro)
        total = 0.0
        for ids, lab in micro:
            logits = model(input_ids=ids).logits.float()
            loss_sum = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                ignore_index=-100, reduction="sum")
            (loss_sum / n_items).backward()
            total += loss_sum.item()
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total / n_items)
    return losses


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_matches_peft(tmp_path, qft_bin, probe_bin, name):
    steps, micro_batch, accumulation = 20, 2, 2
    lr, weight_decay, max_grad_norm, warmup = 5e-3, 0.01, 0.5, 4
    model, base_dir = make_base(tmp_path, name)
    init_dir = tmp_path / "adapter-init"
    # PEFT's default init (B = 0) is what a fresh training run starts from.
    peft_model = make_adapter(model, init_dir, random_b=False)
    vocab = CONFIGS[name]["vocab_size"]
    g = torch.Generator().manual_seed(5)
    rows = []
    for i in range(steps * micro_batch * accumulation):
        ids = torch.randint(0, vocab, (9,), generator=g)
        labels = ids.clone()
        labels[: 1 + i % 4] = -100  # different target counts per row exercise the token weighting
        rows.append((ids, labels))
    data_file = tmp_path / "data.jsonl"
    write_pretokenized(data_file, rows)

    peft_model.train()
    ref_losses = reference_training(peft_model, rows, steps, micro_batch, accumulation, lr, weight_decay,
                                    max_grad_norm, warmup)

    out_dir = tmp_path / "qft-out"
    config_file = tmp_path / "train.yaml"
    config_file.write_text(f"""
model:
  model_name_or_path: {base_dir}
  torch_dtype: fp32
  device: cpu
lora:
  finetuning_type: lora
  adapter_name_or_path: {init_dir}
data:
  pretokenized: {data_file}
training:
  learning_rate: {lr}
  weight_decay: {weight_decay}
  max_grad_norm: {max_grad_norm}
  lr_scheduler_type: linear
  warmup_steps: {warmup}
  per_device_train_batch_size: {micro_batch}
  gradient_accumulation_steps: {accumulation}
  max_steps: {steps}
  logging_steps: 1
  shuffle: false
  seed: 0
output:
  output_dir: {out_dir}
""")
    run([qft_bin, config_file])

    log = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]
    qft_losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(qft_losses) == steps
    for step, (a, b) in enumerate(zip(qft_losses, ref_losses)):
        assert abs(a - b) <= 1e-5 * abs(b), f"step {step + 1}: qft {a} vs peft {b}"

    trained = load_file(str(out_dir / "adapter_model.safetensors"))
    ref_state = {k.replace(".default", ""): v for k, v in peft_model.state_dict().items() if "lora_" in k}
    assert sorted(trained) == sorted(ref_state)
    for k, v in ref_state.items():
        err = rel_err(trained[k], v)
        assert err <= 1e-4, f"{k}: relative error {err:.3e} after {steps} steps"

    # `qft-dist eval` on the same rows with the trained adapter equals PEFT's token-weighted mean loss.
    result = run([qft_bin, "eval", config_file, "--adapter", out_dir])
    evaluated = json.loads(result.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        peft_model.eval()
        loss_sum, n_items = 0.0, 0
        for ids_row, labels_row in rows:
            logits = peft_model(input_ids=ids_row[None]).logits.float()
            loss_sum += torch.nn.functional.cross_entropy(logits[0, :-1], labels_row[1:], ignore_index=-100,
                                                          reduction="sum").item()
            n_items += int((labels_row[1:] != -100).sum())
    assert evaluated["target_tokens"] == n_items
    assert abs(evaluated["loss"] - loss_sum / n_items) <= 1e-5 * loss_sum / n_items

    # peft loads qft's adapter and reproduces qft's logits.
    ids, labels = make_batch(vocab, seed=9)
    batch_file = tmp_path / "eval.safetensors"
    save_file({"input_ids": ids, "labels": labels}, str(batch_file))
    probe_out = tmp_path / "eval-out.safetensors"
    run([probe_bin, "--model", base_dir, "--adapter", out_dir, "--batch", batch_file, "--output", probe_out])
    qft_logits = load_file(str(probe_out))["logits"]
    with torch.no_grad():
        peft_logits = peft_eval_model(base_dir, out_dir)(input_ids=ids).logits
    assert rel_err(qft_logits, peft_logits) <= 1e-5

    # transformers loads the merged model and reproduces the same logits.
    merged_dir = tmp_path / "merged"
    run([qft_bin, "merge", "--base", base_dir, "--adapter", out_dir, "--output", merged_dir, "--dtype", "fp32"])
    merged = Qwen3ForCausalLM.from_pretrained(merged_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
    assert rel_err(merged_logits, qft_logits) <= 1e-5
