"""Data parallelism on CPU through MPI: for the same global batch (micro-batch x accumulation x data-parallel
ranks), 1, 2 and 4 ranks with ZeRO stage 0 and 1 give the same loss curve and the same adapter (or, for full
fine-tuning, the same model) within 1e-5 (losses and gradient norms relative to their size; the adapter or
model as a whole, as the norm of the difference relative to its norm: Adam's m / sqrt(v) amplifies the
last-bit differences of a changed summation order in elements whose gradients are near zero, so single
elements and small tensors can differ by more). Checkpoints and resume: test_checkpoints.py. The runs are
`qft-dist` under `mpirun --oversubscribe`, as users launch it.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run

MPIRUN = ["mpirun", "--oversubscribe", "--allow-run-as-root", "-np"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, qft_bin):
    root = tmp_path_factory.mktemp("dp")
    run([qft_bin, "init-model", "--preset", "tiny-gqa4", "--dtype", "fp32", "--initializer-range", "0.2",
         "--output", root / "model"])
    g = torch.Generator().manual_seed(5)
    with open(root / "rows.jsonl", "w") as f:
        for i in range(32):
            ids = torch.randint(0, 151936, (10 + i % 7,), generator=g).tolist()
            labels = [-100] * (1 + i % 3) + ids[1 + i % 3:]
            f.write(json.dumps({"input_ids": ids, "labels": labels}) + "\n")
    return root


def write_config(setup, name, accumulation, zero_stage, finetuning="lora", steps=6, save_steps=0, extra="", tp=1,
                 sp=False):
    """The config of one run in setup/<name>.yaml; returns its path and the output_dir."""
    out = setup / name
    config = setup / f"{name}.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {setup / 'model'}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: {finetuning}, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {setup / 'rows.jsonl'}}}
training: {{learning_rate: 1.0e-3, per_device_train_batch_size: 1, gradient_accumulation_steps: {accumulation},
           max_steps: {steps}, logging_steps: 1, shuffle: true, seed: 3, max_grad_norm: 0.5, weight_decay: 0.1,
           lr_scheduler_type: constant,
           save_steps: {save_steps} {extra}}}
distributed: {{zero_stage: {zero_stage}, tensor_parallel_size: {tp}, sequence_parallel: {str(sp).lower()}}}
output: {{output_dir: {out}, overwrite_output_dir: true}}
""")
    return config, out


def launcher(ranks):
    return MPIRUN + [str(ranks)] if ranks > 1 else []


def read_curve(out):
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    return [(e["loss"], e["grad_norm"]) for e in log if "loss" in e]


def train(setup, qft_bin, name, ranks, accumulation, zero_stage, finetuning="lora", steps=6, save_steps=0, extra="",
          tp=1, check=True, sp=False):
    config, out = write_config(setup, name, accumulation, zero_stage, finetuning, steps, save_steps, extra, tp, sp)
    result = run(launcher(ranks) + [qft_bin, config], check=check)
    if not check:
        return result
    return read_curve(out), out


def close(a, b, rel):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def assert_same_curves(reference, other, rel=1e-5):
    assert len(reference) == len(other), (reference, other)
    for (l1, g1), (l2, g2) in zip(reference, other):
        assert close(l1, l2, rel) and close(g1, g2, rel), (reference, other)


def assert_same_tensors(file_a, file_b, rel=1e-5):
    a, b = load_file(file_a), load_file(file_b)
    assert a.keys() == b.keys()
    err = sum((a[k].double() - b[k].double()).square().sum() for k in a).sqrt().item()
    scale = sum(a[k].double().square().sum() for k in a).sqrt().item()
    worst = max(a, key=lambda k: (a[k].double() - b[k].double()).norm().item())
    assert err <= rel * scale, (err, scale, worst)


@pytest.mark.parametrize("ranks,accumulation,zero_stage", [(1, 4, 1), (1, 4, 3), (2, 2, 0), (2, 2, 1), (2, 2, 2),
                                                            (2, 2, 3), (4, 1, 0), (4, 1, 1), (4, 1, 2), (4, 1, 3)])
def test_lora_same_global_batch_same_result(setup, qft_bin, ranks, accumulation, zero_stage):
    reference, ref_dir = train(setup, qft_bin, "lora_ref", 1, 4, 0)
    curve, out = train(setup, qft_bin, f"lora_{ranks}_{zero_stage}", ranks, accumulation, zero_stage)
    assert_same_curves(reference, curve)
    assert_same_tensors(ref_dir / "adapter_model.safetensors", out / "adapter_model.safetensors")


@pytest.mark.parametrize("ranks,zero_stage", [(2, 0), (2, 1), (2, 2), (2, 3), (4, 3)])
def test_full_finetuning_same_global_batch_same_model(setup, qft_bin, ranks, zero_stage):
    reference, ref_dir = train(setup, qft_bin, f"full_ref_{ranks}", 1, ranks, 0, finetuning="full", steps=4)
    curve, out = train(setup, qft_bin, f"full_{ranks}_{zero_stage}", ranks, 1, zero_stage, finetuning="full", steps=4)
    assert_same_curves(reference, curve)
    assert_same_tensors(ref_dir / "model.safetensors", out / "model.safetensors")


@pytest.mark.parametrize("ranks,tp,sp,zero_stage", [(2, 1, False, 2), (2, 1, False, 3), (4, 2, True, 2)])
def test_uneven_last_step_and_held_out_rows_under_sharded_stages(setup, qft_bin, ranks, tp, sp, zero_stage):
    """32 rows in micro-batches of 3 leave the epoch's last step 3 micro-batches for 4 slots: under DP 2 one
    rank has fewer (it runs filler micro-batches, ZeRO-2/3 reduce per layer; under sequence parallelism
    the filler has a token count the tensor-parallel size divides); 5 held-out rows split 3/2 over the
    ranks (ZeRO-3 gathers layers in every evaluation forward). Same curve as one rank."""
    extra = ", num_train_epochs: 1, eval_strategy: steps, eval_steps: 1, per_device_eval_batch_size: 2"
    data = f"data: {{pretokenized: {setup / 'rows.jsonl'}, val_size: 5}}"

    def curves(name, ranks, accumulation, stage, tensor=1, sequence=False):
        out = setup / name
        config = setup / f"{name}.yaml"
        config.write_text(f"""
model: {{model_name_or_path: {setup / 'model'}, torch_dtype: fp32, device: cpu}}
lora: {{r: 4, lora_alpha: 8, target_modules: all-linear}}
{data}
training: {{learning_rate: 1.0e-3, per_device_train_batch_size: 3, gradient_accumulation_steps: {accumulation},
           logging_steps: 1, shuffle: true, seed: 3, max_grad_norm: 0.5, lr_scheduler_type: constant {extra}}}
distributed: {{zero_stage: {stage}, tensor_parallel_size: {tensor}, sequence_parallel: {str(sequence).lower()}}}
output: {{output_dir: {out}, overwrite_output_dir: true}}
""")
        run((MPIRUN + [str(ranks)] if ranks > 1 else []) + [qft_bin, config])
        log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
        train_rows = [(e["loss"], e["grad_norm"]) for e in log if "loss" in e]
        eval_rows = [e["eval_loss"] for e in log if "eval_loss" in e]
        return train_rows, eval_rows, out

    ref_train, ref_eval, ref_dir = curves(f"uneven_ref_{ranks}_{zero_stage}", 1, 4, 0)
    train_rows, eval_rows, out = curves(f"uneven_{ranks}_{zero_stage}", ranks, 2, zero_stage, tp, sp)
    assert len(ref_train) == 3 and len(ref_eval) == 3
    assert_same_curves(ref_train, train_rows)
    assert all(close(a, b, 1e-5) for a, b in zip(ref_eval, eval_rows)) and len(eval_rows) == 3, (ref_eval, eval_rows)
    assert_same_tensors(ref_dir / "adapter_model.safetensors", out / "adapter_model.safetensors")


@pytest.mark.parametrize("ranks,tp,accumulation,sp,zero_stage", [
    (2, 2, 4, False, 0), (4, 2, 2, False, 0), (2, 2, 4, True, 0), (4, 2, 2, True, 0),
    (4, 2, 2, False, 1), (4, 2, 2, True, 2)])
def test_tensor_parallel_same_result(setup, qft_bin, ranks, tp, accumulation, sp, zero_stage):
    """Tensor parallel 2 (and 2 x data parallel 2, also with ZeRO 1 and 2 over the data-parallel ranks),
    with and without sequence parallelism (rows of odd lengths: the micro-batch is padded to an even token
    count): the same curve as one rank, and a gathered adapter in the single-GPU layout (same keys and
    shapes)."""
    reference, ref_dir = train(setup, qft_bin, "lora_ref", 1, 4, 0)
    curve, out = train(setup, qft_bin, f"tp_{ranks}_{tp}_{sp}_{zero_stage}", ranks, accumulation, zero_stage, tp=tp,
                       sp=sp)
    assert_same_curves(reference, curve)
    assert_same_tensors(ref_dir / "adapter_model.safetensors", out / "adapter_model.safetensors")


def test_tensor_parallel_resume_is_exact(setup, qft_bin):
    straight, straight_dir = train(setup, qft_bin, "tp_straight", 2, 1, 0, steps=12, save_steps=6, tp=2)
    train(setup, qft_bin, "tp_resumed", 2, 1, 0, steps=6, save_steps=6, tp=2)
    # ZeRO 0: the first data-parallel rank of each tensor-parallel coordinate writes its shard.
    assert sorted(p.name for p in (setup / "tp_resumed" / "checkpoint-6" / "optimizer").iterdir()) == \
        ["dp0-tp0.h5", "dp0-tp1.h5"]
    resume = f", resume_from_checkpoint: {setup / 'tp_resumed' / 'checkpoint-6'}"
    curve, out = train(setup, qft_bin, "tp_resumed", 2, 1, 0, steps=12, save_steps=6, tp=2, extra=resume)
    assert_same_curves(straight, curve, rel=0)
    assert (out / "adapter_model.safetensors").read_bytes() == (straight_dir / "adapter_model.safetensors").read_bytes()


def test_tensor_parallel_size_must_divide_the_kv_heads(setup, qft_bin):
    result = train(setup, qft_bin, "tp_bad", 4, 1, 0, tp=4, check=False)  # tiny-gqa4 has 2 KV heads
    assert result.returncode != 0
    assert "tensor_parallel_size" in result.stderr and "internal error" not in result.stderr, result.stderr[-2000:]


def test_long_context_options_give_the_same_run(setup, qft_bin):
    """training.activation_offloading moves the checkpointed layer inputs to host memory and back: the same
    curve and adapter bytes, for all layers or the first one. training.tiled_mlp runs the MLP block in chunks of
    rows (3, the last shorter): the same curve within 1e-6 (only the fp32 summation order of the weight
    gradients changes), on one rank and under TP 2 with sequence parallelism (chunks of the gathered rows)."""
    ckpt = ", gradient_checkpointing: true"
    reference, ref_dir = train(setup, qft_bin, "ckpt_ref", 1, 4, 0, extra=ckpt)
    for name, layers in (("offload_all", ""), ("offload_first", ", activation_offloading_layers: 1")):
        curve, out = train(setup, qft_bin, name, 1, 4, 0, extra=ckpt + ", activation_offloading: true" + layers)
        assert_same_curves(reference, curve, rel=0)
        assert (out / "adapter_model.safetensors").read_bytes() == \
            (ref_dir / "adapter_model.safetensors").read_bytes()
    tiled = ", tiled_mlp: true, tiled_mlp_num_shards: 3"
    curve, _ = train(setup, qft_bin, "tiled", 1, 4, 0, extra=ckpt + tiled + ", activation_offloading: true")
    assert_same_curves(reference, curve, rel=1e-6)
    curve, _ = train(setup, qft_bin, "tiled_keep", 1, 4, 0, extra=tiled)
    assert_same_curves(reference, curve, rel=1e-6)
    tp_reference, _ = train(setup, qft_bin, "tp_sp_ckpt", 2, 4, 0, tp=2, sp=True, extra=ckpt)
    tp_curve, _ = train(setup, qft_bin, "tp_sp_tiled", 2, 4, 0, tp=2, sp=True,
                        extra=ckpt + tiled + ", activation_offloading: true")
    assert_same_curves(tp_reference, tp_curve, rel=1e-6)


@pytest.mark.parametrize("settings,expected", [
    (dict(tp=2, finetuning="full"), "tensor_parallel_size 2 with finetuning_type full"),
    (dict(tp=2, zero_stage=3), "zero_stage 3 with tensor_parallel_size 2"),
    (dict(sp=True), "sequence_parallel"),
])
def test_combinations_not_built_yet_are_refused_at_start(setup, qft_bin, settings, expected):
    zero_stage = settings.pop("zero_stage", 0)
    result = train(setup, qft_bin, "refused", 2, 1, zero_stage, check=False, **settings)
    assert result.returncode != 0 and expected in result.stderr and "internal error" not in result.stderr, \
        result.stderr[-2000:]
    assert not (setup / "refused" / "adapter_model.safetensors").exists()


def test_selective_recompute_gives_the_same_run_bitwise(setup, qft_bin):
    """training.recompute_granularity: selective (norms, q/k norm + RoPE and SwiGLU made again in backward)
    changes no number: the same curve and adapter bytes as keeping every activation, on one rank and under
    TP 2 with sequence parallelism."""
    reference, ref_dir = train(setup, qft_bin, "lora_ref", 1, 4, 0)
    extra = ", gradient_checkpointing: true, recompute_granularity: selective"
    curve, out = train(setup, qft_bin, "selective", 1, 4, 0, extra=extra)
    assert_same_curves(reference, curve, rel=0)
    assert (out / "adapter_model.safetensors").read_bytes() == (ref_dir / "adapter_model.safetensors").read_bytes()
    tp_reference, _ = train(setup, qft_bin, "tp_sp_keep", 2, 4, 0, tp=2, sp=True)
    tp_curve, _ = train(setup, qft_bin, "tp_sp_selective", 2, 4, 0, tp=2, sp=True, extra=extra)
    assert_same_curves(tp_reference, tp_curve, rel=0)
