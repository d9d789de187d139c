"""A corpus of bad inputs, one per class of defect, each through the command a user would run: every one
must end with exit status 1..127 (an error, never a signal), a message that names the file and the line
or key (never "internal error"), and nothing left behind in the directory the command writes to.
"""
import json
import struct

from conftest import run

DEEP = "[" * 200_000


def train_config(path, model_dir, data_line, output_dir, extra=""):
    path.write_text(f"""model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data:
  {data_line}
training:
  learning_rate: 1.0e-3
  max_steps: 2
{extra}output: {{output_dir: {output_dir}}}
""")
    return path


def snapshot(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def case_files(tmp_path, tiny_model):
    """name -> (command, files to write {relative path: bytes or str}, expected message parts)."""
    model = tiny_model
    out = tmp_path / "out"
    config_json = json.loads((model / "config.json").read_text())
    huge = dict(config_json, vocab_size=10**12, hidden_size=10**6)
    header = json.dumps({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return {
        "deep JSONL record (strict)": (
            ["prepare", "cfg.yaml", "--tokenizer", model],
            {"data.jsonl": DEEP + "\n",
             "cfg.yaml": f"data:\n  datasets:\n    - path: data.jsonl\n  strict: true\n  cache_dir: {out}\n"},
            ["data.jsonl:1", "nested deeper than 512 levels"]),
        "deep pretokenized row": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": DEEP + "\n", "cfg.yaml": None},
            ["rows.jsonl:1", "nested deeper than 512 levels"]),
        "pretokenized row longer than max_position_embeddings": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": json.dumps({"input_ids": [1] * 50000, "labels": [1] * 50000}) + "\n", "cfg.yaml": None},
            ["rows.jsonl:1", "50000 tokens", "max_position_embeddings"]),
        "deep safetensors header": (
            ["inspect", "w.safetensors"],
            {"w.safetensors": struct.pack("<Q", 100_005) + b'{"a":' + b"[" * 100_000},
            ["w.safetensors", "nested deeper than 512 levels"]),
        "duplicate key in a safetensors header": (
            ["inspect", "w.safetensors"],
            {"w.safetensors": struct.pack("<Q", len(header) * 2) + header[:-1] + b"," + header[1:] + b" " + bytes(4)},
            ["w.safetensors", "duplicate key \"a\""]),
        "deep config.json": (
            ["init-model", "--config", "config.json", "--output", out],
            {"config.json": '{"vocab_size": ' + DEEP},
            ["config.json", "line 1", "nested deeper than 512 levels"]),
        "config.json number beyond a double": (
            ["init-model", "--config", "config.json", "--output", out],
            {"config.json": json.dumps(config_json, indent=1).replace('"rope_theta": ', '"rope_theta": 1e999, "x": ')},
            ["config.json", "overflows a double"]),
        "init-model config too big for memory": (
            ["init-model", "--config", "config.json", "--output", out],
            {"config.json": json.dumps(huge)},
            ["vocab_size x hidden_size", "GB"]),
        "deep tokenizer.json": (
            ["template", "data.jsonl", "--tokenizer", "tokenizer.json"],
            {"data.jsonl": '{"text": "x"}\n', "tokenizer.json": '{"model": ' + DEEP},
            ["tokenizer.json", "nested deeper than 512 levels"]),
        "malformed adapter_config.json in inspect": (
            ["inspect", "adapter"],
            {"adapter/adapter_config.json": '{"peft_type": "LORA", "r": 8,,}',
             "adapter/adapter_model.safetensors": struct.pack("<Q", 2) + b"{}"},
            ["adapter/adapter_config.json", "line 1 column 30"]),
        "output_dir that is a file": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": json.dumps({"input_ids": [1, 2], "labels": [1, 2]}) + "\n", "cfg.yaml": "output-is-file"},
            ["cfg.yaml:", "output.output_dir", "is not a directory"]),
        "duplicated YAML key": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": json.dumps({"input_ids": [1, 2], "labels": [1, 2]}) + "\n",
             "cfg.yaml": "extra:  learning_rate: 5.0e-3\n"},
            ["cfg.yaml:8", "duplicate key 'learning_rate'", "line 6"]),
        "model path too long for the file system (found by fuzz_yaml_config)": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": json.dumps({"input_ids": [1, 2], "labels": [1, 2]}) + "\n", "cfg.yaml": "long-model"},
            ["cfg.yaml:1", "model.model_name_or_path", "does not exist"]),
        "NaN learning rate": (
            ["train", "cfg.yaml"],
            {"rows.jsonl": json.dumps({"input_ids": [1, 2], "labels": [1, 2]}) + "\n", "cfg.yaml": "nan"},
            ["cfg.yaml:6", "training.learning_rate", "finite number"]),
    }


def test_every_bad_input_is_a_located_error_with_nothing_left_behind(tmp_path, qft_bin, tiny_model):
    for name, (command, files, expected) in case_files(tmp_path, tiny_model).items():
        case_dir = tmp_path / name.replace(" ", "_")
        case_dir.mkdir()
        out = tmp_path / "out"
        for relative, content in files.items():
            path = case_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if relative == "cfg.yaml" and command[0] == "train":
                rows = f"pretokenized: {case_dir / 'rows.jsonl'}"
                if content == "output-is-file":
                    (case_dir / "taken").write_text("a file")
                    train_config(path, tiny_model, rows, case_dir / "taken")
                elif content == "long-model":
                    train_config(path, "x" * 300, rows, out)
                elif content == "nan":
                    train_config(path, tiny_model, rows, out)
                    path.write_text(path.read_text().replace("learning_rate: 1.0e-3", "learning_rate: .nan"))
                elif content and content.startswith("extra:"):
                    train_config(path, tiny_model, rows, out, extra=content[len("extra:"):])
                else:
                    train_config(path, tiny_model, rows, out)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        before = snapshot(case_dir)
        result = run([qft_bin, *command], check=False, cwd=case_dir)
        message = result.stderr + result.stdout
        assert 1 <= result.returncode <= 127, f"{name}: exit {result.returncode}\n{message[-2000:]}"
        assert "internal error" not in message, f"{name}: {message[-2000:]}"
        for part in expected:
            assert str(part) in message, f"{name}: '{part}' not in\n{message[-2000:]}"
        assert snapshot(case_dir) == before, f"{name}: files left behind"
        assert not out.exists(), f"{name}: {out} was created"
