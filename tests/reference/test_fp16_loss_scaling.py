"""qft's dynamic loss scaler (src/train/loss_scaler.*) against torch.amp.GradScaler itself.

torch's GradScaler is driven on the CPU with synthetic gradients: a step whose gradient holds an inf or a
NaN (flag 1) or only finite values (flag 0). After each step the scale, and whether the optimizer step was
skipped (accelerate's rule: the scale went down; checked against the parameter not moving), are compared
with what `qft-probe --loss-scaler` reports for the same flags: equal bit for bit as fp32 numbers.
qft's LossScaler calls the same ATen kernels as GradScaler, so what this checks is everything around them:
the defaults, which factor goes where, the skip count, the fp32 reciprocal used to unscale.
"""
import json
import random
import shutil

import numpy as np
import pytest
import torch

from conftest import run


def torch_sequence(flags, **options):
    param = torch.nn.Parameter(torch.zeros(4))
    optimizer = torch.optim.SGD([param], lr=1.0)
    scaler = torch.amp.GradScaler("cpu", **options)
    scales, inverse, skipped = [], [], 0
    for i, flag in enumerate(flags):
        optimizer.zero_grad()
        scaler.scale(torch.ones(()))  # initialises the scale tensor, as scaler.scale(loss) does
        grad = torch.full((4,), 1e-3) * scaler.get_scale()
        if flag == "1":
            grad[i % 4] = float("inf") if i % 2 else float("nan")
        param.grad = grad
        inverse.append(np.float32(scaler._scale.double().reciprocal().float().item()))
        before_scale, before_param = scaler.get_scale(), param.detach().clone()
        scaler.step(optimizer)
        scaler.update()
        was_skipped = scaler.get_scale() < before_scale  # accelerate's optimizer_step_was_skipped
        assert was_skipped == torch.equal(param.detach(), before_param), f"step {i}"
        assert was_skipped == (flag == "1"), f"step {i}"
        skipped += was_skipped
        scales.append(np.float32(scaler.get_scale()))
    return scales, inverse, skipped, scaler._get_growth_tracker()


def qft_sequence(probe_bin, tmp_path, flags, **options):
    out = tmp_path / "scaler.json"
    cmd = [probe_bin, "--loss-scaler", flags, "--output", out]
    names = {"init_scale": "--init-scale", "growth_factor": "--growth-factor",
             "backoff_factor": "--backoff-factor", "growth_interval": "--growth-interval"}
    for key, value in options.items():
        cmd += [names[key], repr(value)]
    run(cmd)
    got = json.loads(out.read_text())
    return ([np.float32(s) for s in got["scales"]], [np.float32(s) for s in got["inverse_scales"]],
            got["skipped"], got["growth_tracker"])


rng = random.Random(5)
CASES = {
    # torch's defaults: three overflows back off 2**16 to 2**13, 2000 clean steps grow it once, and so on.
    "defaults": ("111" + "0" * 2001 + "1" + "0" * 1999 + "0" * 5, {}),
    # Factors that are not powers of two round in fp32 as ATen's kernel rounds them.
    "odd_factors": ("".join(rng.choice("0001") for _ in range(400)),
                    dict(init_scale=1000.0, growth_factor=3.0, backoff_factor=0.3, growth_interval=3)),
    # A grown scale that overflows fp32 is not taken (and the growth tracker still resets).
    "growth_overflow": ("0" * 6 + "1" + "0" * 4,
                        dict(init_scale=2.0 ** 126, growth_factor=2.0, growth_interval=1)),
    # Repeated backoff runs down through the fp32 subnormals to zero (at the 150th halving).
    "backoff_underflow": ("1" * 150, dict(init_scale=1.0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scale_sequence_matches_torch_grad_scaler(tmp_path, probe_bin, name):
    flags, options = CASES[name]
    want = torch_sequence(flags, **options)
    got = qft_sequence(probe_bin, tmp_path, flags, **options)
    for i, (w, g) in enumerate(zip(want[0], got[0])):
        assert w.tobytes() == g.tobytes(), f"step {i}: torch scale {w!r}, qft {g!r}"
    assert len(got[0]) == len(flags)
    if name != "backoff_underflow":  # 1/0 is inf in both; compared bit for bit elsewhere
        assert [w.tobytes() for w in want[1]] == [g.tobytes() for g in got[1]]
    assert got[2] == want[2] == flags.count("1")
    assert got[3] == want[3]


from test_data_parallel import MPIRUN, setup  # noqa: E402,F401  (setup: the tiny model and rows fixture)


# ZeRO-3 is left out: its CPU (MPI) path gathers compute weights in fp32 only (all_gather refuses Half).
@pytest.mark.parametrize("zero_stage", [0, 1, 2])
def test_fp16_under_data_parallel_zero_stages_unscales_what_the_optimizer_reads(setup, qft_bin, zero_stage):
    """fp16 training on 2 ranks gives the curve of 1 rank with the same global batch (within fp16 rounding of
    the changed micro-batch split); the gradient each ZeRO stage's optimizer reads (whole buffer, slice, shard)
    is unscaled — a missed one would be 2**16 times too large in grad_norm and in the update."""
    def curve(name, ranks, accumulation, stage):
        out = setup / name
        config = setup / f"{name}.yaml"
        config.write_text(f"""
model: {{model_name_or_path: {setup / 'model'}, torch_dtype: fp16, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {setup / 'rows.jsonl'}}}
training: {{learning_rate: 1.0e-2, per_device_train_batch_size: 1, gradient_accumulation_steps: {accumulation},
           max_steps: 4, logging_steps: 1, shuffle: true, seed: 3, save_steps: 0}}
distributed: {{zero_stage: {stage}}}
output: {{output_dir: {out}, overwrite_output_dir: true}}
""")
        run((MPIRUN + [str(ranks)] if ranks > 1 else []) + [qft_bin, config])
        return [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]

    reference = curve("fp16_ref", 1, 4, 0)
    other = curve(f"fp16_{zero_stage}", 2, 2, zero_stage)
    assert len(reference) == len(other) == 4
    for a, b in zip(reference, other):
        assert a["loss_scale"] == b["loss_scale"]
        assert (a["grad_norm"] is None) == (b["grad_norm"] is None)
        assert abs(a["loss"] - b["loss"]) <= 2e-2 * abs(a["loss"]), (reference, other)
        if a["grad_norm"] is not None:
            assert abs(a["grad_norm"] - b["grad_norm"]) <= 2e-2 * a["grad_norm"], (reference, other)


def test_fp16_overflowing_loss_skips_the_step_instead_of_stopping(setup, qft_bin, tmp_path):
    """As HF Trainer with fp16 (GradScaler): a forward that overflows fp16 (here every step: lm_head scaled so
    its logits pass 65504) makes a non-finite loss; the step is skipped and the scale backs off instead of the
    run stopping, and the logged loss goes through HF's logging_nan_inf_filter (the window's sum so far
    over its steps: 0 when every step overflows). Nothing is updated: the saved adapter's B stays zero."""
    from safetensors.torch import load_file, save_file
    model = tmp_path / "model"
    shutil.copytree(setup / "model", model)
    weights = load_file(model / "model.safetensors")
    head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    weights[head] = weights[head] * 1e5
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "run"
    config = tmp_path / "overflow.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {model}, torch_dtype: fp16, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {setup / 'rows.jsonl'}}}
training: {{learning_rate: 1.0e-2, per_device_train_batch_size: 2, max_steps: 3, logging_steps: 1, save_steps: 0}}
output: {{output_dir: {out}, overwrite_output_dir: true}}
""")
    run([qft_bin, config])
    rows = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "grad_norm" in r]
    assert [r["grad_norm"] for r in steps] == [None, None, None], steps
    assert [r["loss_scale"] for r in steps] == [32768.0, 16384.0, 8192.0], steps
    assert [r["loss"] for r in steps] == [0.0, 0.0, 0.0], steps
    adapter = load_file(out / "adapter_model.safetensors")
    b_factors = [t for name, t in adapter.items() if "lora_B" in name]
    assert b_factors and all(torch.count_nonzero(t) == 0 for t in b_factors)
