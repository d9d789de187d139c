"""qft-dist as a user runs it: init a tiny model with the real tokenizer, train on the bundled demo chat data
through the whole text pipeline (template, masks, packing, token cache), and check what it writes; and
bad input gives a clear error with a non-zero exit and no output left behind.
"""
import json
import struct

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen3ForCausalLM

from conftest import BUILD_DIR, SOURCE_DIR, run


def init_tiny(qft_bin, out_dir, range_=0.2):
    run([qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--initializer-range", range_, "--seed", "0",
         "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", out_dir])


def demo_config(tmp_path, model_dir, steps=30, extra_training=""):
    config = tmp_path / "train.yaml"
    data = SOURCE_DIR / "configs" / "demo-data"
    config.write_text(f"""
model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 8, lora_alpha: 16, target_modules: all-linear}}
data:
  datasets:
    - {{path: {data / 'demo_chat.jsonl'}, count: 24}}
    - {{path: {data / 'demo_alpaca.jsonl'}, count: 8}}
  max_seq_length: 256
  cache_dir: {tmp_path / 'cache'}
training:
  learning_rate: 3.0e-3
  lr_scheduler_type: constant
  per_device_train_batch_size: 2
  max_steps: {steps}
  logging_steps: 1
  seed: 1
{extra_training}
output: {{output_dir: {tmp_path / 'run'}}}
""")
    return config


def test_demo_pipeline_trains_and_writes_a_peft_adapter(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    init_tiny(qft_bin, model_dir)
    config = demo_config(tmp_path, model_dir)
    run([qft_bin, config])

    log = [json.loads(line) for line in (tmp_path / "run" / "trainer_log.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in log if "loss" in entry]
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.75 * first, f"loss did not fall enough: {first:.3f} -> {last:.3f}"
    for key in ("grad_norm", "learning_rate", "epoch", "tokens_per_second", "peak_memory_bytes"):
        assert all(key in entry for entry in log if "loss" in entry), key
    assert list((tmp_path / "cache").glob("tokens-*.h5")), "training did not write the token cache"

    # The adapter is a PEFT adapter; the tokenizer travels with the model.
    adapter_dir = tmp_path / "run"
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 7 * 2  # A and B, 7 projections, 2 layers
    base = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, adapter_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    assert torch.isfinite(peft_model(input_ids=ids).logits).all()

    # A second run into the finished output_dir is refused (overwrite_output_dir is false).
    again = run([qft_bin, config], check=False)
    assert again.returncode != 0 and "output_dir" in (again.stderr + again.stdout)


def test_bad_input_fails_cleanly(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    init_tiny(qft_bin, model_dir)

    # A typo in a key: the file, the line and a suggestion.
    config = demo_config(tmp_path, model_dir, extra_training="  learning_rat: 1.0")
    result = run([qft_bin, config], check=False)
    out = result.stderr + result.stdout
    assert result.returncode != 0
    assert "learning_rat" in out and "did you mean 'learning_rate'" in out and "train.yaml:" in out
    assert not (tmp_path / "run").exists()

    # A wrong type names the key.
    config = demo_config(tmp_path, model_dir, steps="ten")
    result = run([qft_bin, config], check=False)
    assert result.returncode != 0 and "training.max_steps" in result.stderr + result.stdout

    # A missing model directory names the file.
    config = demo_config(tmp_path, tmp_path / "nowhere")
    result = run([qft_bin, config], check=False)
    assert result.returncode != 0 and "nowhere" in result.stderr + result.stdout

    # A safetensors file whose header lies about its size: named, no crash.
    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[:8] = struct.pack("<Q", header_len + 10_000_000_000)
    weights.write_bytes(bytes(data))
    config = demo_config(tmp_path, model_dir)
    result = run([qft_bin, config], check=False)
    assert result.returncode == 1, result.stderr  # an error, not a signal
    assert "model.safetensors" in result.stderr + result.stdout

    # A truncated file likewise.
    data[:8] = struct.pack("<Q", header_len)
    weights.write_bytes(bytes(data[: len(data) // 2]))
    result = run([qft_bin, config], check=False)
    assert result.returncode == 1 and "model.safetensors" in result.stderr + result.stdout
    assert not (tmp_path / "run" / "adapter_model.safetensors").exists()


def test_two_ranks_equal_one_rank_with_accumulation(tmp_path, qft_bin):
    """A world of one and `mpirun -np 2` run the same code: 2 ranks x micro-batch 1 == 1 rank x accumulation 2."""
    model_dir = tmp_path / "model"
    run([qft_bin, "init-model", "--preset", "tiny-gqa4", "--dtype", "fp32", "--initializer-range", "0.2",
         "--output", model_dir])
    g = torch.Generator().manual_seed(3)
    with open(tmp_path / "rows.jsonl", "w") as f:
        for i in range(16):
            ids = torch.randint(0, 151936, (12 + i % 5,), generator=g).tolist()
            labels = [-100] * (1 + i % 3) + ids[1 + i % 3:]
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")

    def train(name, accumulation, launcher):
        config = tmp_path / f"{name}.yaml"
        config.write_text(f"""
model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {tmp_path / 'rows.jsonl'}}}
training: {{learning_rate: 1.0e-2, per_device_train_batch_size: 1, gradient_accumulation_steps: {accumulation},
           max_steps: 6, logging_steps: 1, shuffle: false, max_grad_norm: 1.0}}
output: {{output_dir: {tmp_path / name}}}
""")
        run(launcher + [qft_bin, config])
        log = (tmp_path / name / "trainer_log.jsonl").read_text().splitlines()
        return [(e["loss"], e["grad_norm"]) for e in map(json.loads, log) if "loss" in e]

    one = train("one", 2, [])
    two = train("two", 1, ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2"])
    assert len(one) == len(two) == 6
    for (l1, g1), (l2, g2) in zip(one, two):
        assert abs(l1 - l2) <= 1e-6 * l1 and abs(g1 - g2) <= 1e-5 * g1, (one, two)
