"""A rank that dies or hangs ends the whole job with a non-zero exit and a message naming a rank, within the
watchdog's time (distributed.collective_timeout), instead of leaving the other ranks waiting forever.
Tested on CPU under `mpirun -np 2`: one rank killed (SIGKILL) or stopped (SIGSTOP) in the middle of training.
With QFT_FAILURE_DEVICE=cuda (tests/device/failure_check.sh on 2 GPUs) the same runs use NCCL, whose
collectives the NCCL watchdog thread follows.
"""
import json
import os
import signal
import subprocess
import time

import pytest
import torch

TIMEOUT = 5  # distributed.collective_timeout in these runs
DEVICE = os.environ.get("QFT_FAILURE_DEVICE", "cpu")
DTYPE = "fp32" if DEVICE == "cpu" else "bf16"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, qft_bin):
    root = tmp_path_factory.mktemp("failures")
    subprocess.run([qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--output", str(root / "model")],
                   check=True, capture_output=True)
    g = torch.Generator().manual_seed(1)
    with open(root / "rows.jsonl", "w") as f:
        for _ in range(16):
            ids = torch.randint(0, 151936, (12,), generator=g).tolist()
            f.write(json.dumps({"input_ids": ids, "labels": ids}) + "\n")
    return root


def start_job(root, qft_bin, name):
    config = root / f"{name}.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {root / 'model'}, torch_dtype: {DTYPE}, device: {DEVICE}}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}}
data: {{pretokenized: {root / 'rows.jsonl'}}}
training: {{learning_rate: 1.0e-3, per_device_train_batch_size: 1, max_steps: 1000000, logging_steps: 1,
           save_steps: 0}}
distributed: {{collective_timeout: {TIMEOUT}}}
output: {{output_dir: {root / name}, overwrite_output_dir: true}}
""")
    job = subprocess.Popen(["mpirun", "--oversubscribe", "--allow-run-as-root", "-np", "2", qft_bin, str(config)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = root / name / "trainer_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # training is under way once a few steps are logged
        if log.exists() and len(log.read_text().splitlines()) >= 3:
            break
        assert job.poll() is None, job.communicate()
        time.sleep(0.2)
    else:
        pytest.fail("the job did not start training")
    ranks = subprocess.run(["pgrep", "-f", f"qft-dist {config}"], capture_output=True, text=True).stdout.split()
    ranks = [int(pid) for pid in ranks if int(pid) != job.pid]
    assert len(ranks) == 2, ranks
    return job, ranks


def end_of(job, seconds):
    start = time.time()
    try:
        out, err = job.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        pytest.fail(f"the job still ran {seconds} s after the rank failed")
    return job.returncode, out + err, time.time() - start


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_a_failed_rank_ends_the_job(setup, qft_bin, sig):
    job, ranks = start_job(setup, qft_bin, f"fail_{sig.name.lower()}")
    os.kill(ranks[1], sig)
    try:
        code, output, took = end_of(job, 60)
    finally:
        for pid in ranks:  # a stopped rank that mpirun did not reap
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert code != 0, output[-2000:]
    assert took < 60
    print(f"\nENDED {sig.name} {DEVICE}: exit {code} after {took:.1f} s;",
          " | ".join(line[-220:] for line in output.splitlines() if "has not completed" in line or "NCCL" in line))
    if sig == signal.SIGSTOP:
        # The rank still running reports the collective it waited in, names itself and ends the job.
        assert "has not completed after" in output and "another rank died or hangs" in output, output[-3000:]
        assert "rank 0 of 2" in output or "rank 1 of 2" in output, output[-3000:]
    else:
        assert "rank" in output, output[-3000:]  # mpirun names the process rank that exited
