"""What a run shows and leaves behind besides the model: TensorBoard event files read back with TensorBoard's
own reader, qft_config.yaml, run_summary.json, and report.html rendered by headless Chromium with its curves
checked on the screenshot; also for a run that fails after some steps; `qft-dist plot` redraws the report.
"""
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run

LOSS_RGB = (0x1F, 0x77, 0xB4)  # the train/loss stroke of report.html
LR_RGB = (0x2C, 0xA0, 0x2C)    # the learning-rate stroke


def tiny_model(qft_bin, out_dir):
    run([qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--initializer-range", "0.2", "--seed", "0",
         "--output", out_dir])


def write_rows(path, count=16):
    with open(path, "w") as f:
        for i in range(count):
            ids = [(7 * i + 13 * t) % 1000 + 5 for t in range(10 + i % 4)]
            f.write(json.dumps({"input_ids": ids, "labels": [-100] + ids[1:]}) + "\n")


def write_config(tmp_path, model_dir, name, steps=6, learning_rate="1.0e-2", report_to="tensorboard"):
    rows = tmp_path / "rows.jsonl"
    if not rows.exists():
        write_rows(rows)
    config = tmp_path / f"{name}.yaml"
    config.write_text(f"""
model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{finetuning_type: lora, r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {rows}}}
training: {{learning_rate: {learning_rate}, lr_scheduler_type: linear, per_device_train_batch_size: 2,
           max_steps: {steps}, logging_steps: 1, seed: 3}}
output: {{output_dir: {tmp_path / name}, report_to: {report_to}}}
""")
    return config


def screenshot_pixels(html_path, png_path):
    """Renders the report in headless Chromium; returns the RGB pixel counts of the screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (launch/setup.sh installs it)"
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             "--window-size=1400,2200", f"--screenshot={png_path}", f"file://{html_path}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and png_path.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(png_path).convert("RGB")).reshape(-1, 3)
    colors, counts = np.unique(pixels, axis=0, return_counts=True)
    return {tuple(int(v) for v in c): int(n) for c, n in zip(colors, counts)}


def test_tensorboard_events_config_summary_and_report(tmp_path, qft_bin):
    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)
    config = write_config(tmp_path, model_dir, "run")
    result = run([qft_bin, config], env={**os.environ, "QFT_PROGRESS": "lines"})
    out_dir = tmp_path / "run"
    log = [json.loads(line) for line in (out_dir / "trainer_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]

    # Plain lines (not a terminal) with elapsed/ETA, and the end-of-run summary naming what was written.
    assert "step 6/6 | epoch" in result.stderr and "| eta " in result.stderr
    assert "run completed: 6/6 steps" in result.stderr and "best" in result.stderr
    assert "report.html" in result.stderr and "adapter_model.safetensors" in result.stderr

    # TensorBoard's own reader sees every scalar of every logged step.
    event_files = list((out_dir / "runs").glob("events.out.tfevents.*"))
    assert len(event_files) == 1
    events = EventAccumulator(str(out_dir / "runs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "train/learning_rate", "train/epoch", "train/tokens_per_second",
            "train/peak_memory_bytes"} <= tags
    for tag, key in [("train/loss", "loss"), ("train/learning_rate", "learning_rate"), ("train/epoch", "epoch"),
                     ("train/grad_norm", "grad_norm")]:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [row["step"] for row in log]
        for s, row in zip(scalars, log):
            assert s.value == pytest.approx(row[key], rel=1e-6, abs=1e-12), (tag, s.step)

    # The resolved config: defaults filled in, loadable YAML, the same values the run used.
    resolved = yaml.safe_load((out_dir / "qft_config.yaml").read_text())
    assert resolved["training"]["learning_rate"] == pytest.approx(1e-2)
    assert resolved["training"]["adam_beta2"] == pytest.approx(0.999)  # a default
    assert resolved["training"]["adam_epsilon"] == pytest.approx(1e-8)  # a float for PyYAML too, not "1e-08"
    assert resolved["output"]["report_to"] == "tensorboard"
    assert resolved["data"]["pretokenized"].endswith("rows.jsonl")
    checked = run([qft_bin, "train", config, "--check"])
    assert yaml.safe_load(checked.stdout) == resolved

    summary = json.loads((out_dir / "run_summary.json").read_text())
    assert summary["status"] == "completed" and summary["global_step"] == 6 and summary["total_steps"] == 6
    assert summary["data"]["rows"] == 16 and summary["tokens_seen"] > 0
    assert "adapter_model.safetensors" in summary["outputs"] and "report.html" in summary["outputs"]

    # The report, rendered: the loss and learning-rate curves are on the screenshot.
    html = (out_dir / "report.html").read_text()
    assert "<script" not in html and "completed" in html
    counts = screenshot_pixels(out_dir / "report.html", tmp_path / "report.png")
    assert counts.get(LOSS_RGB, 0) > 400, counts.get(LOSS_RGB, 0)
    assert counts.get(LR_RGB, 0) > 400, counts.get(LR_RGB, 0)

    # `plot` redraws it from trainer_log.jsonl alone (an old run without the other files).
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out_dir / "trainer_log.jsonl", bare / "trainer_log.jsonl")
    plotted = run([qft_bin, "plot", bare])
    assert plotted.stdout.strip() == str(bare / "report.html")
    assert 'data-series="train/loss"' in (bare / "report.html").read_text()
    # ... and a log without loss values draws no loss curve: the pixel check above can fail.
    (bare / "trainer_log.jsonl").write_text("".join(json.dumps({"step": r["step"]}) + "\n" for r in log))
    run([qft_bin, "plot", bare])
    counts = screenshot_pixels(bare / "report.html", tmp_path / "empty.png")
    assert counts.get(LOSS_RGB, 0) == 0

    missing = run([qft_bin, "plot", tmp_path / "model"], check=False)
    assert missing.returncode == 1 and "no trainer_log.jsonl" in missing.stderr


def test_failed_run_still_writes_its_report(tmp_path, qft_bin):
    """A learning rate of 1e30 blows the weights up after the first update: step 2's loss is not finite."""
    model_dir = tmp_path / "model"
    tiny_model(qft_bin, model_dir)
    config = write_config(tmp_path, model_dir, "run", steps=6, learning_rate="1.0e+30", report_to="none")
    # QFT_PROGRESS=bar draws the terminal progress bar even though stderr is a pipe here (text mode reads \r as \n).
    result = run([qft_bin, config], check=False, env={**os.environ, "QFT_PROGRESS": "bar"})
    assert result.returncode == 1, result.stderr
    assert re.search(r"[\r\n] +\d+%\|#* *\| 1/6 loss \d+\.\d{4} lr 1\.00e\+30 \d+ tok/s mem \d+\.\d\d GiB", result.stderr)
    assert "the loss is" in result.stderr and "run FAILED after" in result.stderr
    out_dir = tmp_path / "run"
    summary = json.loads((out_dir / "run_summary.json").read_text())
    assert summary["status"] == "failed" and "the loss is" in summary["error"]
    assert 1 <= summary["global_step"] < 6
    html = (out_dir / "report.html").read_text()
    assert 'class="failed"' in html and "the loss is" in html and 'data-series="train/loss"' in html
    assert not (out_dir / "runs").exists()  # report_to: none writes no event files
    assert not (out_dir / "adapter_model.safetensors").exists()

    # On a terminal (a pty from util-linux `script`) the bar is drawn without being asked for...
    env = {k: v for k, v in os.environ.items() if k != "QFT_PROGRESS"}
    env["TERM"] = "xterm"
    command = f"{qft_bin} {config} --override output.overwrite_output_dir=true"
    tty = run(["script", "-qefc", command, "/dev/null"], check=False, env=env)
    assert tty.returncode == 1 and "\x1b[K" in tty.stdout and "1/6 loss" in tty.stdout, tty.stdout[-3000:]
    # ...and never in a pipe.
    piped = run(command.split(), check=False, env=env)
    assert piped.returncode == 1 and "\x1b[K" not in piped.stderr and "step 1/6 | epoch" in piped.stderr
