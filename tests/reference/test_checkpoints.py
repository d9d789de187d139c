"""Checkpoints and resume under `mpirun --oversubscribe` (CPU, fp32, the tiny model and rows of
test_data_parallel.py): every rank writes the optimizer state it owns into optimizer/dp<d>-tp<t>.h5 of
checkpoint-<step>.tmp, rank 0 renames the directory into place and then moves output_dir/latest.

- 20 steps straight == 10 steps, kill -9 of the whole job, resume from `latest` to 20: the same loss sequence and
  the same adapter bytes (ZeRO 1, 2 ranks).
- A rank killed in the middle of writing its shard (QFT_FAULT_INJECT, docs/RELIABILITY.md) leaves the previous
  checkpoint and `latest` intact; resuming from `latest` continues exactly and the next save removes the .tmp.
- A resume with another data-parallel size (2 ranks x accumulation 2 -> 4 x 1 and -> 1 x 4) or ZeRO stage (0, 3)
  reshards the optimizer state (and, for full fine-tuning, the fp32 masters): the curve and weights match the run
  that never stopped within 1e-5 (the summation order changes, as in test_data_parallel.py).
- Another tensor_parallel_size or another global batch is refused, naming the key, with a non-zero exit and nothing
  written.
"""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import run
from test_data_parallel import (assert_same_curves, assert_same_tensors, launcher, read_curve,  # noqa: F401
                                setup, train, write_config)

FAULT = "QFT_FAULT_INJECT"


def launch(ranks, qft_bin, config, fault=None, **kwargs):
    """`qft-dist config` under mpirun, with QFT_FAULT_INJECT=fault passed to every rank."""
    env = dict(os.environ)
    env.pop(FAULT, None)
    if fault:
        env[FAULT] = fault
    command = launcher(ranks) + (["-x", FAULT] if fault and ranks > 1 else []) + [qft_bin, config]
    return command, env


def fresh_copy(source, target):
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    return target


def files_of(directory):
    """Every file under `directory` with its size and modification time."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def straight(setup, qft_bin):
    """20 steps without a stop, ZeRO 1 on 2 ranks, a checkpoint every 5."""
    return train(setup, qft_bin, "straight", 2, 1, 1, steps=20, save_steps=5)


def test_kill9_after_a_checkpoint_then_resume_from_latest_is_exact(setup, qft_bin, straight):
    curve, straight_dir = straight
    config, out = write_config(setup, "killed", 1, 1, steps=20, save_steps=10)
    # The job cannot finish on its own: rank 0 dies in the middle of the save of step 20 at the latest, so the kill
    # below always lands after checkpoint-10 and before a complete checkpoint-20.
    command, env = launch(2, qft_bin, config, fault="kill-during-save:0:20")
    job = subprocess.Popen([str(c) for c in command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    latest = out / "latest"
    deadline = time.time() + 120
    while not (latest.exists() and latest.read_text() == "checkpoint-10\n"):
        assert time.time() < deadline, "checkpoint-10 and latest did not appear"
        if job.poll() is not None:
            break  # the fault injection ended it (after checkpoint-10, see above)
        time.sleep(0.02)
    ranks = subprocess.run(["pgrep", "-f", f"qft-dist {config}"], capture_output=True, text=True).stdout.split()
    for pid in [job.pid] + [int(p) for p in ranks]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.communicate()
    deadline = time.time() + 30
    while subprocess.run(["pgrep", "-f", f"qft-dist {config}"], capture_output=True).returncode == 0:
        assert time.time() < deadline, "a rank survived SIGKILL"
        time.sleep(0.05)  # no rank left that could still write
    assert latest.read_text() == "checkpoint-10\n"
    assert not (out / "checkpoint-20").exists()
    assert (out / "checkpoint-10" / "optimizer" / "dp0-tp0.h5").exists()
    assert (out / "checkpoint-10" / "optimizer" / "dp1-tp0.h5").exists()  # ZeRO 1: each rank its own shard

    config, out = write_config(setup, "killed", 1, 1, steps=20, save_steps=10,
                               extra=", resume_from_checkpoint: latest")
    command, env = launch(2, qft_bin, config)
    run(command, env=env)
    assert_same_curves(curve, read_curve(out), rel=0)
    assert (out / "adapter_model.safetensors").read_bytes() == (straight_dir / "adapter_model.safetensors").read_bytes()
    assert latest.read_text() == "checkpoint-20\n"


def test_a_rank_killed_during_a_save_leaves_the_previous_checkpoint_intact(setup, qft_bin, straight):
    curve, straight_dir = straight
    config, out = write_config(setup, "faulty", 1, 1, steps=20, save_steps=5)
    command, env = launch(2, qft_bin, config, fault="kill-during-save:1:10")
    result = run(command, check=False, env=env)
    assert result.returncode != 0
    # Rank 1 died after the first dataset of its shard reached the disk.
    assert (out / "checkpoint-10.tmp" / "optimizer" / "dp1-tp0.h5").exists()
    assert not (out / "checkpoint-10").exists()
    assert (out / "latest").read_text() == "checkpoint-5\n"
    assert (out / "checkpoint-5" / "adapter_model.safetensors").read_bytes() == \
        (straight_dir / "checkpoint-5" / "adapter_model.safetensors").read_bytes()

    config, out = write_config(setup, "faulty", 1, 1, steps=20, save_steps=5, extra=", resume_from_checkpoint: latest")
    command, env = launch(2, qft_bin, config)
    run(command, env=env)
    assert_same_curves(curve, read_curve(out), rel=0)
    assert (out / "adapter_model.safetensors").read_bytes() == (straight_dir / "adapter_model.safetensors").read_bytes()
    assert not (out / "checkpoint-10.tmp").exists()  # the save of step 10 replaced it
    assert (out / "latest").read_text() == "checkpoint-20\n"


@pytest.mark.parametrize("finetuning,weights", [("lora", "adapter_model.safetensors"), ("full", "model.safetensors")])
def test_resume_with_another_data_parallel_size_or_zero_stage_reshards(setup, qft_bin, finetuning, weights):
    reference, reference_dir = train(setup, qft_bin, f"{finetuning}_whole", 2, 2, 1, finetuning, steps=8)
    _, first = train(setup, qft_bin, f"{finetuning}_first", 2, 2, 1, finetuning, steps=4, save_steps=4)
    assert sorted(p.name for p in (first / "checkpoint-4" / "optimizer").iterdir()) == ["dp0-tp0.h5", "dp1-tp0.h5"]
    # ZeRO-3: each rank stores only its range of the masters (full) or of the frozen base (LoRA).
    for ranks, accumulation, zero_stage in [(4, 1, 1), (1, 4, 0), (2, 2, 0), (4, 1, 3)]:
        name = f"{finetuning}_to_{ranks}_{zero_stage}"
        fresh_copy(first, setup / name)
        curve, out = train(setup, qft_bin, name, ranks, accumulation, zero_stage, finetuning, steps=8, save_steps=4,
                           extra=", resume_from_checkpoint: latest")
        assert_same_curves(reference, curve)
        assert_same_tensors(reference_dir / weights, out / weights)
        shards = sorted(p.name for p in (out / "checkpoint-8" / "optimizer").iterdir())
        assert shards == [f"dp{d}-tp0.h5" for d in range(ranks if zero_stage else 1)], shards


@pytest.mark.parametrize("ranks,accumulation,tp,key", [
    (2, 2, 2, "distributed.tensor_parallel_size is 2, but the checkpoint"),
    (2, 2, 1, "training.gradient_accumulation_steps x data-parallel ranks is 2 x 2 = 4"),
    (4, 1, 1, "training.gradient_accumulation_steps x data-parallel ranks is 1 x 4 = 4"),
])
def test_an_incompatible_resume_is_refused_naming_the_key(setup, qft_bin, ranks, accumulation, tp, key):
    # The checkpoint: 2 data-parallel ranks x accumulation 1 (a global batch of 2 rows).
    _, base = train(setup, qft_bin, "refusal_base", 2, 1, 0, steps=2, save_steps=2)
    name = f"refused_{ranks}_{accumulation}_{tp}"
    out = fresh_copy(base, setup / name)
    before = files_of(out)
    result = train(setup, qft_bin, name, ranks, accumulation, 0, steps=4, save_steps=2, tp=tp, check=False,
                   extra=", resume_from_checkpoint: latest")
    assert result.returncode != 0
    assert key in result.stderr and "internal error" not in result.stderr, result.stderr[-3000:]
    assert files_of(out) == before
