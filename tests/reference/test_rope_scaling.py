"""RoPE scaling ("linear" and "yarn" rope types) against transformers.

For each config.json variant (transformers >= 5 `rope_parameters` and the older `rope_theta` +
`rope_scaling` spelling, YaRN's defaults and each of its optional keys):
  * inv_freq equals transformers' ROPE_INIT_FUNCTIONS bit for bit, cos/sin (attention_factor included)
    equal Qwen3RotaryEmbedding's to fp32 rounding (`qft-probe --rope-tables`);
  * the whole model's logits at positions beyond original_max_position_embeddings agree with
    Qwen3ForCausalLM's (fp32, relative error <= 1e-5).
Rope types qft does not implement are refused naming the file and the key.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run

from transformers import Qwen3Config, Qwen3ForCausalLM  # noqa: E402
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding  # noqa: E402

BASE = dict(model_type="qwen3", vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6,
            max_position_embeddings=1024, tie_word_embeddings=False, torch_dtype="float32")


def new_style(rope_parameters):
    return dict(BASE, rope_parameters=dict(rope_parameters, rope_theta=10000.0))


def old_style(rope_scaling, **extra):
    return dict(BASE, rope_theta=10000.0, rope_scaling=rope_scaling, **extra)


VARIANTS = {
    "yarn_defaults": new_style({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    "yarn_old_spelling": old_style({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    "yarn_betas_no_truncate": new_style({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                                         "beta_fast": 16.0, "beta_slow": 2.0, "truncate": False}),
    "yarn_attention_factor": new_style({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                                        "attention_factor": 0.75}),
    "yarn_mscale": new_style({"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 64,
                              "mscale": 0.707, "mscale_all_dim": 1.0}),
    # No factor: max_position_embeddings / original_max_position_embeddings.
    "yarn_implicit_factor": new_style({"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 256}),
    # No original_max_position_embeddings: max_position_embeddings (transformers' standardize_rope_params).
    "yarn_no_original": old_style({"rope_type": "yarn", "factor": 2.0}),
    "linear": new_style({"rope_type": "linear", "factor": 2.5}),
    "linear_old_spelling": old_style({"type": "linear", "factor": 3.0}),
}


def write_config(directory, config):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rope_tables_match_transformers(tmp_path, probe_bin, name):
    model_dir = write_config(tmp_path / name, VARIANTS[name])
    hf_config = Qwen3Config.from_pretrained(model_dir)
    rotary = Qwen3RotaryEmbedding(hf_config)
    positions = torch.tensor([0, 1, 7, 100, 255, 256, 511, 1000, 1023, 4000], dtype=torch.long)
    x = torch.zeros(1, positions.numel(), 8, dtype=torch.float32)
    want_cos, want_sin = rotary(x, positions.unsqueeze(0))

    batch = tmp_path / "positions.safetensors"
    save_file({"position_ids": positions}, str(batch))
    out = tmp_path / "tables.safetensors"
    run([probe_bin, "--rope-tables", "--model", model_dir, "--batch", batch, "--output", out])
    got = load_file(str(out))
    assert torch.equal(got["inv_freq"], rotary.inv_freq), (got["inv_freq"] - rotary.inv_freq).abs().max()
    assert rotary.attention_scaling != 1.0 or name.startswith("linear")
    torch.testing.assert_close(got["cos"], want_cos[0], rtol=0, atol=2e-6)
    torch.testing.assert_close(got["sin"], want_sin[0], rtol=0, atol=2e-6)


@pytest.mark.parametrize("name", ["yarn_defaults", "yarn_mscale", "linear"])
def test_whole_model_logits_match_transformers(tmp_path, probe_bin, name):
    model_dir = write_config(tmp_path / name, VARIANTS[name])
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config.from_pretrained(model_dir)).float().eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(model_dir, safe_serialization=True)
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()

    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, BASE["vocab_size"], (2, 24), generator=g)
    # Positions past original_max_position_embeddings, where the scaled frequencies matter most.
    positions = (torch.arange(24) * 37 + 200).unsqueeze(0).repeat(2, 1)
    labels = ids.clone()
    with torch.no_grad():
        want = model(input_ids=ids, position_ids=positions).logits

    batch = tmp_path / "batch.safetensors"
    save_file({"input_ids": ids, "labels": labels, "position_ids": positions}, str(batch))
    out = tmp_path / "out.safetensors"
    run([probe_bin, "--model", model_dir, "--batch", batch, "--output", out])
    got = load_file(str(out))["logits"]
    err = ((got.double() - want.double()).norm() / want.double().norm()).item()
    assert err <= 1e-5, f"relative error {err:.3e}"


@pytest.mark.parametrize("rope, message", [
    ({"rope_type": "dynamic", "factor": 2.0}, '"rope_scaling.rope_type" "dynamic" is not supported'),
    ({"type": "longrope", "factor": 2.0}, '"rope_scaling.type" "longrope" is not supported'),
    ({"rope_type": "linear"}, 'of type "linear" needs a "factor"'),
    ({"rope_type": "yarn", "factor": -2.0}, '"rope_scaling.factor" must be positive'),
    ({"rope_type": "yarn", "factor": 2.0, "beta_fast": 1.0, "beta_slow": 4.0}, "beta_fast >= beta_slow"),
    ({"rope_type": "yarn", "factor": 2.0, "truncate": "yes"}, '"rope_scaling.truncate" must be a boolean'),
])
def test_bad_rope_scaling_is_refused_naming_file_and_key(tmp_path, probe_bin, rope, message):
    model_dir = write_config(tmp_path / "bad", old_style(rope))
    batch = tmp_path / "positions.safetensors"
    save_file({"position_ids": torch.arange(4)}, str(batch))
    result = run([probe_bin, "--rope-tables", "--model", model_dir, "--batch", batch, "--output",
                  tmp_path / "out.safetensors"], check=False)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert message in log, log
    assert str(model_dir / "config.json") in log, log


def test_sequences_beyond_max_position_embeddings_warn_once_with_the_count(tmp_path, qft_bin):
    import h5py
    from test_everyday_cli import chat_config, tiny_model

    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)
    config_json = model_dir / "config.json"
    config = json.loads(config_json.read_text())
    config["max_position_embeddings"] = 32
    config_json.write_text(json.dumps(config))
    result = run([qft_bin, "train", chat_config(tmp_path, model_dir, extra="")])
    with h5py.File(next((tmp_path / "cache").glob("tokens-*.h5")), "r") as f:
        offsets = f["sample_offsets"][:]
    too_long = int(((offsets[1:] - offsets[:-1]) > 32).sum())
    assert too_long > 0
    log = result.stdout + result.stderr
    noun = "sequence is" if too_long == 1 else "sequences are"
    assert log.count("longer than max_position_embeddings") == 1, log
    assert f"{too_long} training {noun} longer than max_position_embeddings 32" in log, log
