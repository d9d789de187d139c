"""The CLI around training as a user meets it: --help/--version/"did you mean", errors for keys from other
trainers and for Hub ids, the example configs, prepare --override, inspect on a token cache, eval with a
missing adapter, the sbatch scripts; and outputs that load everywhere: the adapter from any directory with
AutoPeftModelForCausalLM, merged and fully fine-tuned models with their chat template through transformers'
apply_chat_template + generate, and merge --force.
"""
import itertools
import json
import os
import re
import stat

import h5py
import pytest
import torch
import yaml
from peft import AutoPeftModelForCausalLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import BUILD_DIR, SOURCE_DIR, run

TOKENIZER_DIR = BUILD_DIR / "qwen3-tokenizer"


def tiny_model(qft_bin, out_dir, tokenizer=True):
    cmd = [qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--initializer-range", "0.2", "--seed", "0",
           "--output", out_dir]
    return run(cmd + (["--tokenizer", TOKENIZER_DIR] if tokenizer else []))


def chat_config(tmp_path, model_dir, name="train", extra=""):
    data = SOURCE_DIR / "configs" / "demo-data"
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data:
  datasets:
    - {{path: {data / 'demo_chat.jsonl'}, count: 8}}
  max_seq_length: 128
  cache_dir: {tmp_path / 'cache'}
training: {{learning_rate: 1.0e-3, per_device_train_batch_size: 2, max_steps: 2, logging_steps: 1}}
output: {{output_dir: {tmp_path / name}}}
{extra}""")
    return config


def failure(result):
    assert result.returncode != 0, result.stdout
    return result.stderr + result.stdout


def test_help_version_and_did_you_mean(qft_bin):
    helped = run([qft_bin, "--help"])
    assert "subcommands:" in helped.stdout and "plot" in helped.stdout and helped.stderr == ""
    assert run([qft_bin, "--version"]).stdout.startswith("qft-dist ")
    for sub in ("train", "prepare", "merge", "eval", "inspect", "init-model", "plot"):
        sub_help = run([qft_bin, sub, "--help"])
        assert sub_help.stdout.startswith("usage: qft-dist"), sub
    bare = run([qft_bin], check=False)
    assert bare.returncode == 2 and "usage:" in bare.stderr and bare.stdout == ""
    typo = run([qft_bin, "mrege"], check=False)
    assert typo.returncode == 2 and "did you mean 'merge'?" in typo.stderr


def test_keys_from_other_trainers_and_hub_ids(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)

    flat = tmp_path / "flat.yaml"  # a LLaMA-Factory config as users bring it
    flat.write_text(f"model_name_or_path: {model_dir}\nstage: sft\nlora_rank: 8\ncutoff_len: 1024\n")
    assert re.search(r"flat.yaml:1: unknown key 'model_name_or_path': qft's config is nested .* goes under model",
                     failure(run([qft_bin, flat], check=False)))
    flat.write_text("lora_rank: 8\n")
    assert "LLaMA-Factory's 'lora_rank' is qft's 'lora.r'" in failure(run([qft_bin, flat], check=False))

    misplaced = chat_config(tmp_path, model_dir, extra="")
    text = misplaced.read_text().replace("logging_steps: 1}", "logging_steps: 1, save_total_limit: 2}")
    misplaced.write_text(text)
    assert "write it as output.save_total_limit" in failure(run([qft_bin, misplaced], check=False))
    misplaced.write_text(text.replace(", save_total_limit: 2}", ", max_seq_length: 512}"))
    assert "write it as data.max_seq_length" in failure(run([qft_bin, misplaced], check=False))
    misplaced.write_text(text.replace(", save_total_limit: 2}", ", num_epochs: 1}"))
    assert "is qft's 'training.num_train_epochs'" in failure(run([qft_bin, misplaced], check=False))

    hub = run([qft_bin, misplaced, "--override", "model.model_name_or_path=Qwen/Qwen3-0.6B"], check=False)
    assert "huggingface-cli download Qwen/Qwen3-0.6B --local-dir models/Qwen3-0.6B" in failure(hub)
    assert not (tmp_path / "train").exists()
    merge = run([qft_bin, "merge", "--base", "Qwen/Qwen3-0.6B", "--adapter", model_dir, "--output", tmp_path / "m"],
                check=False)
    assert "qft reads local model directories only" in failure(merge)


def test_example_configs_validate(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)
    expected = {f"qwen3-{size}-lora" for size in ("0.6b", "1.7b", "4b", "8b", "14b", "32b")}
    expected |= {f"qwen3-{size}-full" for size in ("0.6b", "1.7b", "4b", "8b")}
    expected |= {"qwen3-8b-qlora"}
    found = {p.stem for p in (SOURCE_DIR / "configs").glob("qwen3-*.yaml")}
    assert found == expected
    output_dirs = set()
    for name in sorted(found):
        path = SOURCE_DIR / "configs" / f"{name}.yaml"
        text = path.read_text()
        header = "".join(line for line in text.splitlines(True) if line.startswith("#"))
        assert re.search(rf"#\s+(mpirun -np \d+ )?qft-dist configs/{re.escape(name)}\.yaml", header), name
        config = yaml.safe_load(text)
        size, method = name.split("-")[1:]
        if method == "qlora":  # LoRA on a 4-bit base
            assert config["model"]["load_in_4bit"] is True
            method = "lora"
        assert config["lora"]["finetuning_type"] == method
        assert config["model"]["model_name_or_path"].lower().endswith(f"qwen3-{size}")
        output_dirs.add(config["output"]["output_dir"])
        # qft's own loader validates every key and value (paths relative to the source tree, as in the header).
        checked = run([qft_bin, "train", path, "--check", "--override", f"model.model_name_or_path={model_dir}"],
                      cwd=SOURCE_DIR)
        assert yaml.safe_load(checked.stdout)["lora"]["finetuning_type"] == method
    assert len(output_dirs) == len(found)


def test_init_model_prepare_override_inspect_and_eval_adapter(tmp_path, qft_bin):
    bare = tiny_model(qft_bin, tmp_path / "bare", tokenizer=False)
    assert "--tokenizer DIR" in bare.stderr

    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)
    config = chat_config(tmp_path, model_dir)

    # eval with a missing adapter fails before anything is tokenized.
    missing = run([qft_bin, "eval", config, "--adapter", tmp_path / "nowhere"], check=False)
    assert "--adapter" in failure(missing) and "does not exist" in missing.stderr
    assert not (tmp_path / "cache").exists()

    prepared = run([qft_bin, "prepare", config, "--override", "data.max_seq_length=48"])
    caches = list((tmp_path / "cache").glob("tokens-*.h5"))
    assert len(caches) == 1, prepared.stdout
    with h5py.File(caches[0], "r") as f:
        offsets = f["sample_offsets"][:]
        ids, targets = f["input_ids"][:], f["target_mask"][:]
    assert (offsets[1:] - offsets[:-1]).max() <= 48  # the override took effect
    samples = len(offsets) - 1

    inspected = run([qft_bin, "inspect", caches[0]]).stdout
    assert f"samples: {samples} " in inspected and "sample length histogram" in inspected
    assert "sample 0:" in inspected
    # A sample with context and targets, decoded with transformers' tokenizer and marked run by run.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    index = next(i for i in range(samples) if 0 < targets[offsets[i]:offsets[i + 1]].sum() < offsets[i + 1] - offsets[i])
    expected, start, end = "", offsets[index], offsets[index + 1]
    for flag, run_ids in itertools.groupby(zip(targets[start:end], ids[start:end]), key=lambda p: p[0]):
        text = tokenizer.decode([int(i) for _, i in run_ids])
        expected += f"[[{text}]]" if flag else text
    shown = run([qft_bin, "inspect", caches[0], "--sample", index]).stdout
    assert shown.split("]])\n", 1)[1] == expected + "\n"
    assert "not in [0," in failure(run([qft_bin, "inspect", caches[0], "--sample", samples], check=False))


def chat_and_generate(model, tokenizer):
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    prompt = tokenizer.decode(ids[0])
    assert prompt.startswith("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n"), prompt
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


def test_adapter_merged_and_full_outputs_load_everywhere(tmp_path, qft_bin):
    base = tmp_path / "base"
    tiny_model(qft_bin, base)
    run([qft_bin, chat_config(tmp_path, base, name="lora")])
    adapter = tmp_path / "lora"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base)  # absolute (tmp_path is)
    assert (adapter / "tokenizer.json").exists() and (adapter / "tokenizer_config.json").exists()

    # A relative base in the config is stored absolute, so the adapter loads from any working directory.
    rel = chat_config(tmp_path, os.path.relpath(base, tmp_path), name="lora_rel")
    run([qft_bin, rel], cwd=tmp_path)
    assert json.loads((tmp_path / "lora_rel" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(elsewhere)
        model = AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "lora_rel"), dtype=torch.float32)
        chat_and_generate(model, AutoTokenizer.from_pretrained(str(tmp_path / "lora_rel")))
    finally:
        os.chdir(cwd)

    # merge: the chat template, tokenizer and generation files travel; --force replaces atomically.
    merged = tmp_path / "merged"
    run([qft_bin, "merge", "--base", base, "--adapter", adapter, "--output", merged])
    for name in os.listdir(base):
        if not name.endswith(".safetensors") and name != "config.json":
            assert (merged / name).read_bytes() == (base / name).read_bytes(), name
    chat_and_generate(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32),
                      AutoTokenizer.from_pretrained(merged))
    again = run([qft_bin, "merge", "--base", base, "--adapter", adapter, "--output", merged], check=False)
    assert "--force" in failure(again)
    (merged / "stale.txt").write_text("from the previous merge")
    run([qft_bin, "merge", "--base", base, "--adapter", adapter, "--output", f"{merged}/", "--force"])
    assert (merged / "config.json").exists() and not (merged / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if "merge" in p.name) == ["merged"]  # no temporary left
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    refused = run([qft_bin, "merge", "--base", base, "--adapter", adapter, "--output", precious, "--force"], check=False)
    assert "not a model directory" in failure(refused) and (precious / "notes.txt").exists()

    # Full fine-tuning from a base that keeps its template in chat_template.jinja (transformers >= 4.43).
    jinja_base = tmp_path / "jinja_base"
    tiny_model(qft_bin, jinja_base)
    tok_config = json.loads((jinja_base / "tokenizer_config.json").read_text())
    (jinja_base / "chat_template.jinja").write_text(tok_config.pop("chat_template"))
    (jinja_base / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (jinja_base / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}))
    full = chat_config(tmp_path, jinja_base, name="full")
    full.write_text(full.read_text().replace("finetuning_type: lora", "finetuning_type: full"))
    run([qft_bin, full])
    out = tmp_path / "full"
    for name in ("chat_template.jinja", "tokenizer_config.json", "tokenizer.json", "generation_config.json"):
        assert (out / name).read_bytes() == (jinja_base / name).read_bytes(), name
    chat_and_generate(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), AutoTokenizer.from_pretrained(out))


@pytest.mark.parametrize("script", ["qft-single-gpu.sbatch", "qft-multi-gpu.sbatch"])
def test_sbatch_scripts_pass_arguments_and_need_a_config(tmp_path, script, qft_bin):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    srun = fake_bin / "srun"  # records what would run
    srun.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$SRUN_ARGS"\n')
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SRUN_ARGS": str(tmp_path / "args"),
           "QFT": qft_bin}
    path = SOURCE_DIR / "cluster" / script
    none = run(["bash", path], check=False, env=env)
    assert none.returncode == 2 and "usage: sbatch cluster/" in none.stderr
    absent = run(["bash", path, tmp_path / "absent.yaml"], check=False, env=env)
    assert absent.returncode == 2 and "absent.yaml' does not exist" in absent.stderr
    config = tmp_path / "c.yaml"
    config.write_text("model: {}\n")
    run(["bash", path, config, "--override", "training.learning_rate=1e-4"], env=env)
    assert (tmp_path / "args").read_text().splitlines() == [
        "--mpi=pmix", qft_bin, str(config), "--override", "training.learning_rate=1e-4"]


def test_multi_gpu_sbatch_mpirun_variant(tmp_path, qft_bin):
    """LAUNCHER=mpirun: Open MPI's mpirun inside the allocation, one rank per GPU, arguments passed through."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    mpirun = fake_bin / "mpirun"
    mpirun.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$MPIRUN_ARGS"\n')
    mpirun.chmod(mpirun.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "MPIRUN_ARGS": str(tmp_path / "args"),
           "QFT": qft_bin, "LAUNCHER": "mpirun", "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": "8(x2)"}
    config = tmp_path / "c.yaml"
    config.write_text("model: {}\n")
    run(["bash", SOURCE_DIR / "cluster" / "qft-multi-gpu.sbatch", config, "--override", "a.b=1"], env=env)
    assert (tmp_path / "args").read_text().splitlines() == [
        "-np", "16", "--map-by", "ppr:8:node", "-x", "NCCL_DEBUG", qft_bin, str(config), "--override", "a.b=1"]
