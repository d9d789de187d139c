"""Evaluation during training (issue 9): data.val_size holds rows out, eval_strategy/eval_steps evaluate them,
and load_best_model_at_end keeps the best adapter. The logged eval_loss is checked against transformers + PEFT
computing the loss of the saved adapter on the same held-out rows (the split re-derived here from its
definition), under one rank and under `mpirun -np 2`.
"""
import json
import math

import pytest
import torch
from peft import PeftModel
from transformers import Qwen3ForCausalLM

from conftest import run

MASK64 = (1 << 64) - 1


def splitmix64_mix(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def held_out_rows(n, val_size, seed):
    """train/training_rows.cpp split_rows: Fisher-Yates with SplitMix64 draws."""
    count = round(val_size * n) if val_size < 1 else int(val_size)
    order = list(range(n))
    state = seed ^ 0x76616C5F73697A65
    for i in range(n - 1, 0, -1):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        j = splitmix64_mix(state) % (i + 1)
        order[i], order[j] = order[j], order[i]
    return sorted(order[:count])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, qft_bin):
    root = tmp_path_factory.mktemp("eval")
    run([qft_bin, "init-model", "--preset", "tiny-gqa4", "--dtype", "fp32", "--initializer-range", "0.2",
         "--output", root / "model"])
    g = torch.Generator().manual_seed(11)
    rows = []
    for i in range(24):
        ids = torch.randint(0, 151936, (9 + i % 6,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (1 + i % 2) + ids[1 + i % 2:]})
    with open(root / "rows.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return root, rows


def train(setup, qft_bin, name, ranks=1, accumulation=2, extra_training="", val_size=0.25, check=True,
          learning_rate=2.0e-2):
    root, _ = setup
    config = root / f"{name}.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {root / 'model'}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {root / 'rows.jsonl'}, val_size: {val_size}}}
training: {{learning_rate: {learning_rate}, lr_scheduler_type: constant, per_device_train_batch_size: 1,
           gradient_accumulation_steps: {accumulation}, max_steps: 8, logging_steps: 1, seed: 7, save_steps: 0,
           eval_strategy: steps, eval_steps: 2, per_device_eval_batch_size: 3 {extra_training}}}
output: {{output_dir: {root / name}, overwrite_output_dir: true}}
""")
    launcher = ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", str(ranks)] if ranks > 1 else []
    result = run(launcher + [qft_bin, config], check=check)
    if not check:
        return result
    log = [json.loads(line) for line in (root / name / "trainer_log.jsonl").read_text().splitlines()]
    return [row for row in log if "eval_loss" in row], root / name


def peft_loss(setup, adapter_dir):
    """Mean token loss of base + adapter on the held-out rows, as transformers computes it (shifted labels)."""
    root, rows = setup
    model = PeftModel.from_pretrained(Qwen3ForCausalLM.from_pretrained(root / "model"), adapter_dir).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for r in held_out_rows(len(rows), 0.25, 7):
            ids = torch.tensor([rows[r]["input_ids"]])
            labels = torch.tensor(rows[r]["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].double()
            keep = labels != -100
            total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
            count += int(keep.sum())
    return total / count


def test_eval_loss_is_the_held_out_loss(setup, qft_bin):
    evals, out = train(setup, qft_bin, "steps")
    assert [row["step"] for row in evals] == [2, 4, 6, 8]
    assert all(row["eval_rows"] == 6 for row in evals)
    for row in evals:
        assert math.isclose(row["eval_perplexity"], math.exp(row["eval_loss"]), rel_tol=1e-12)
    reference = peft_loss(setup, out)
    assert math.isclose(evals[-1]["eval_loss"], reference, rel_tol=1e-5), (evals[-1]["eval_loss"], reference)


def test_two_ranks_evaluate_the_same(setup, qft_bin):
    one, _ = train(setup, qft_bin, "one")
    two, _ = train(setup, qft_bin, "two", ranks=2, accumulation=1)
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two):
        assert math.isclose(a["eval_loss"], b["eval_loss"], rel_tol=1e-5), (one, two)


def test_load_best_model_at_end_keeps_the_best_adapter(setup, qft_bin):
    # This learning rate makes the held-out loss go up again after a while, so the best step is not the last one.
    evals, out = train(setup, qft_bin, "best", extra_training=", load_best_model_at_end: true")
    best = min(evals, key=lambda row: row["eval_loss"])
    assert best["step"] != evals[-1]["step"], f"the test needs a run whose last evaluation is not the best: {evals}"
    assert math.isclose(peft_loss(setup, out), best["eval_loss"], rel_tol=1e-5)


def test_misconfigured_evaluation_is_refused(setup, qft_bin):
    result = train(setup, qft_bin, "no_val", val_size=0, check=False)
    assert result.returncode != 0 and "data.val_size" in result.stderr, result.stderr[-1000:]
    result = train(setup, qft_bin, "too_big", val_size=24, check=False)
    assert result.returncode != 0 and "val_size" in result.stderr and "internal error" not in result.stderr
