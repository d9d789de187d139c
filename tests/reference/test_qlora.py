"""QLoRA end to end: qft-dist trains a LoRA adapter on a 4-bit (NF4) base quantized at load, the adapter
loads in PEFT, and `merge --load-in-4bit` / `--save-4bit` give the values an independent NF4 written here
from the definition (formats.md §4: nearest code-book value per block of 64, double quantization of the
absmax with bitsandbytes' dynamic map) would give. (Equality with bitsandbytes' own kernels is checked on
the GPU machine: tests/device/qlora_check.sh.)
"""
import json
import math

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import Qwen3ForCausalLM

from conftest import BUILD_DIR, SOURCE_DIR, run

NF4 = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
                    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
                    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                    0.7229568362236023, 1.0], dtype=torch.float32)
PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
               "mlp.up_proj", "mlp.down_proj")


def dynamic_map():
    """bitsandbytes' create_dynamic_map(signed=True), as formats.md §4.3 describes it."""
    data = []
    for i in range(7):
        boundaries = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += (10 ** (-6 + i) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    return torch.tensor(sorted(data), dtype=torch.float32)


def nearest(values, table):
    return (values.unsqueeze(-1) - table).abs().argmin(-1)


def quantize(w, blocksize=64):
    """(packed uint8, absmax codes uint8, absmax2 fp32, offset) of NF4 with double quantization."""
    flat = w.reshape(-1).float()
    n = flat.numel()
    blocks = math.ceil(n / blocksize)
    padded = torch.zeros(blocks * blocksize)
    padded[:n] = flat
    absmax = padded.view(blocks, blocksize).abs().amax(1)
    scaled = padded.view(blocks, blocksize) * (1.0 / absmax).unsqueeze(1)
    codes = nearest(scaled, NF4)
    codes[scaled.isnan()] = 0
    codes = codes.reshape(-1)[: n + n % 2].to(torch.uint8)
    packed = (codes[0::2] << 4) | codes[1::2]
    offset = absmax.mean()
    centred = absmax - offset
    chunks = math.ceil(blocks / 256)
    padded2 = torch.zeros(chunks * 256)
    padded2[:blocks] = centred
    absmax2 = padded2.view(chunks, 256).abs().amax(1)
    code2 = nearest((padded2.view(chunks, 256) * (1.0 / absmax2).unsqueeze(1)).reshape(-1)[:blocks], dynamic_map())
    return packed, code2.to(torch.uint8), absmax2, offset


def dequantize(packed, code2, absmax2, offset, shape, blocksize=64):
    absmax = dynamic_map()[code2.long()] * absmax2.repeat_interleave(256)[: code2.numel()] + offset
    codes = torch.stack([packed >> 4, packed & 15], 1).reshape(-1).long()
    n = shape[0] * shape[1]
    values = NF4[codes[:n]] * absmax.repeat_interleave(blocksize)[:n]
    return values.view(shape)


def test_qlora_trains_merges_and_exports_4bit(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    run([qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--initializer-range", "0.2", "--seed", "0",
         "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", model_dir])
    data = SOURCE_DIR / "configs" / "demo-data"
    config = tmp_path / "qlora.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu, load_in_4bit: true}}
lora: {{r: 8, lora_alpha: 16, target_modules: all-linear}}
data:
  datasets:
    - {{path: {data / 'demo_chat.jsonl'}, count: 16}}
  max_seq_length: 256
  cache_dir: {tmp_path / 'cache'}
training: {{learning_rate: 3.0e-3, lr_scheduler_type: constant, per_device_train_batch_size: 2, max_steps: 6,
           logging_steps: 1, seed: 1, gradient_checkpointing: true}}
output: {{output_dir: {tmp_path / 'run'}}}
""")
    run([qft_bin, config])
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "trainer_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    resolved = (tmp_path / "run" / "qft_config.yaml").read_text()
    assert "load_in_4bit: true" in resolved and "bnb_4bit_use_double_quant: true" in resolved

    # The adapter is an ordinary PEFT LoRA adapter.
    adapter = tmp_path / "run"
    base = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    base_weights = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, adapter)
    assert torch.isfinite(peft_model(input_ids=torch.tensor([[1, 2, 3, 4]])).logits).all()
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    scaling = 16 / 8

    # merge --load-in-4bit: the NF4-dequantized base (this file's NF4) plus PEFT's delta.
    run([qft_bin, "merge", "--base", model_dir, "--adapter", adapter, "--output", tmp_path / "merged",
         "--load-in-4bit"])
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())
    for layer in range(2):
        for module in PROJECTIONS:
            key = f"model.layers.{layer}.{module}.weight"
            w = base_weights[key]
            expected = dequantize(*quantize(w), w.shape)
            a = lora[f"base_model.model.{key[:-len('.weight')]}.lora_A.weight"]
            b = lora[f"base_model.model.{key[:-len('.weight')]}.lora_B.weight"]
            expected = expected + (b @ a) * scaling
            err = (merged[key] - expected).abs().max() / expected.abs().max()
            assert err < 1e-6, (key, float(err))
    assert torch.equal(merged["model.embed_tokens.weight"], base_weights["model.embed_tokens.weight"])

    # merge --save-4bit: bitsandbytes' layout of the merged weights, with its quantization_config.
    run([qft_bin, "merge", "--base", model_dir, "--adapter", adapter, "--output", tmp_path / "merged4",
         "--load-in-4bit", "--save-4bit"])
    q = load_file(str(tmp_path / "merged4" / "model.safetensors"))
    qc = json.loads((tmp_path / "merged4" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
    for layer in range(2):
        for module in PROJECTIONS:
            key = f"model.layers.{layer}.{module}.weight"
            packed, code2, absmax2, offset = quantize(merged[key])
            n = merged[key].numel()
            assert q[key].dtype == torch.uint8 and tuple(q[key].shape) == ((n + 1) // 2, 1)
            assert torch.equal(q[key].reshape(-1), packed), key
            assert torch.equal(q[key + ".absmax"], code2), key
            assert torch.equal(q[key + ".nested_absmax"], absmax2), key
            assert torch.equal(q[key + ".quant_map"], NF4)
            assert torch.equal(q[key + ".nested_quant_map"], dynamic_map())
            state = json.loads(bytes(q[key + ".quant_state.bitsandbytes__nf4"].tolist()).decode())
            assert state["quant_type"] == "nf4" and state["blocksize"] == 64 and state["shape"] == list(merged[key].shape)
            assert state["nested_offset"] == offset.item()


def load_checkpoint(model_dir):
    """Every tensor of a model directory, single-file or sharded."""
    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    tensors = {}
    for name in files:
        tensors.update(load_file(str(model_dir / name)))
    return tensors


def test_init_model_save_4bit_is_the_dense_init_quantized(tmp_path, qft_bin):
    """init-model --save-4bit streams the same draws as the dense init-model, quantized as merge --save-4bit
    quantizes: its files equal, byte for byte, merge --save-4bit of the dense init with a zero adapter, and
    every projection equals this file's NF4 of the dense weight. qft then trains a LoRA on it."""
    common = ["init-model", "--preset", "tiny-untied", "--seed", "5", "--max-shard-size", "4MB"]
    dense_dir, q4_dir = tmp_path / "dense", tmp_path / "q4"
    run([qft_bin, *common, "--output", dense_dir])
    run([qft_bin, *common, "--save-4bit", "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", q4_dir])
    dense, q4 = load_checkpoint(dense_dir), load_checkpoint(q4_dir)
    config = json.loads((q4_dir / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
    assert qc["bnb_4bit_use_double_quant"] and qc["bnb_4bit_compute_dtype"] == "bfloat16"
    assert config["torch_dtype"] == "bfloat16"
    assert len(json.loads((q4_dir / "model.safetensors.index.json").read_text())["weight_map"]) == len(q4)

    projections = {f"model.layers.{layer}.{module}.weight" for layer in range(2) for module in PROJECTIONS}
    suffixes = ("", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4")
    assert set(q4) == {k for k in dense if k not in projections} | {k + s for k in projections for s in suffixes}
    for key, tensor in dense.items():
        if key not in projections:
            assert q4[key].dtype == torch.bfloat16 and torch.equal(q4[key], tensor), key
            continue
        packed, code2, absmax2, offset = quantize(tensor)
        assert torch.equal(q4[key].reshape(-1), packed), key
        assert torch.equal(q4[key + ".absmax"], code2), key
        assert torch.equal(q4[key + ".nested_absmax"], absmax2), key
        state = json.loads(bytes(q4[key + ".quant_state.bitsandbytes__nf4"].tolist()).decode())
        assert state["dtype"] == "bfloat16" and state["shape"] == list(tensor.shape)
        assert state["nested_offset"] == offset.item()

    # The same bytes as the all-in-memory writer: merge --save-4bit of the dense init plus a zero delta (a
    # fresh PEFT adapter has lora_B = 0), with the same shard size.
    from peft import LoraConfig, get_peft_model
    base = Qwen3ForCausalLM.from_pretrained(dense_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "zero-adapter")
    merged_dir = tmp_path / "merged4"
    run([qft_bin, "merge", "--base", dense_dir, "--adapter", tmp_path / "zero-adapter", "--output", merged_dir,
         "--save-4bit", "--max-shard-size", "4MB"])
    shard_files = sorted(p.name for p in q4_dir.glob("model*"))
    assert len(shard_files) > 2 and shard_files == sorted(p.name for p in merged_dir.glob("model*"))
    for name in shard_files:
        assert (q4_dir / name).read_bytes() == (merged_dir / name).read_bytes(), name

    # --no-double-quant: plain fp32 absmax, as merge's flag.
    plain_dir = tmp_path / "plain"
    run([qft_bin, *common, "--save-4bit", "--no-double-quant", "--output", plain_dir])
    plain = load_checkpoint(plain_dir)
    key = "model.layers.1.mlp.down_proj.weight"
    blocks = dense[key].reshape(-1, 64).float().abs().amax(1)
    assert plain[key + ".absmax"].dtype == torch.float32 and torch.equal(plain[key + ".absmax"], blocks)
    assert key + ".nested_absmax" not in plain
    assert not json.loads((plain_dir / "config.json").read_text())["quantization_config"]["bnb_4bit_use_double_quant"]

    # A QLoRA run on the pre-quantized checkpoint (no load_in_4bit: the packed weights load as they are).
    run_config = tmp_path / "qlora.yaml"
    run_config.write_text(f"""
model: {{model_name_or_path: {q4_dir}, torch_dtype: fp32, device: cpu}}
lora: {{r: 4, lora_alpha: 8, target_modules: all-linear}}
data:
  datasets:
    - {{path: {SOURCE_DIR / 'configs' / 'demo-data' / 'demo_chat.jsonl'}, count: 8}}
  max_seq_length: 128
  cache_dir: {tmp_path / 'cache'}
training: {{learning_rate: 3.0e-3, lr_scheduler_type: constant, per_device_train_batch_size: 2, max_steps: 3,
           logging_steps: 1, seed: 1}}
output: {{output_dir: {tmp_path / 'run'}}}
""")
    result = run([qft_bin, run_config])
    assert "on an NF4 (4-bit) base" in result.stdout + result.stderr
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "trainer_log.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses), losses


def test_init_model_device(tmp_path, qft_bin):
    """init-model --device: cpu (the default) writes the very bytes of a run without the option, dense and
    4-bit; cuda draws on the GPU (deterministic per seed, not the CPU values) where there is one, and fails
    naming the reason, writing nothing, where there is none; any other device is refused."""
    def files(model_dir):
        return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}

    common = ["init-model", "--preset", "tiny-untied", "--seed", "3", "--max-shard-size", "4MB"]
    for variant in ([], ["--save-4bit"]):
        name = "q4" if variant else "dense"
        default_dir, cpu_dir = tmp_path / f"{name}-default", tmp_path / f"{name}-cpu"
        run([qft_bin, *common, *variant, "--output", default_dir])
        run([qft_bin, *common, *variant, "--device", "cpu", "--output", cpu_dir])
        default_files = files(default_dir)
        assert len(default_files) > 2 and files(cpu_dir) == default_files, name

    assert "--device cpu|cuda" in run([qft_bin, "init-model", "--help"]).stdout
    for device, reason in (("tpu", "--device 'tpu' is not cpu, cuda or cuda:N"),
                           ("meta", "--device meta is not supported; use cpu or cuda")):
        refused = run([qft_bin, *common, "--device", device, "--output", tmp_path / device], check=False)
        assert refused.returncode != 0 and reason in refused.stderr, refused.stderr
        assert not (tmp_path / device).exists()

    before = set(tmp_path.iterdir())
    gpu_dir = tmp_path / "q4-cuda"
    on_gpu = run([qft_bin, *common, "--save-4bit", "--device", "cuda", "--output", gpu_dir], check=False)
    if torch.cuda.is_available():  # the GPU machine: drawn and quantized there, reproducibly
        assert on_gpu.returncode == 0, on_gpu.stderr
        again = tmp_path / "q4-cuda-again"
        run([qft_bin, *common, "--save-4bit", "--device", "cuda", "--output", again])
        gpu_files = files(gpu_dir)
        assert gpu_files == files(again)
        assert gpu_files.keys() == default_files.keys() and gpu_files != default_files
    else:  # CI: no GPU, so a clear error and nothing written (not even the temporary directory)
        assert on_gpu.returncode != 0
        assert "init-model: --device cuda: no CUDA device is available here" in on_gpu.stderr, on_gpu.stderr
        assert set(tmp_path.iterdir()) == before
