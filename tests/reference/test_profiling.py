"""training.profile_steps: a CPU run writes a Chrome trace of exactly the profiled steps, the summary tool
reads it, and bad values are config errors. The summary's GPU arithmetic (categories, busy and idle time)
is checked on a hand-made trace with known kernels: CI has no GPU.
"""
import json
import subprocess
import sys

import pytest

from conftest import SOURCE_DIR, run

SUMMARY = SOURCE_DIR / "tests" / "tools" / "profile_summary.py"


def write_config(tmp_path, model_dir, profile_steps):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"input_ids": list(range(10 + i, 42 + i)), "labels": list(range(10 + i, 42 + i))})
                            + "\n" for i in range(8)))
    config = tmp_path / "train.yaml"
    config.write_text(f"""model: {{model_name_or_path: {model_dir}, torch_dtype: fp32, device: cpu}}
lora: {{r: 4, lora_alpha: 8, target_modules: all-linear}}
data: {{pretokenized: {rows}}}
training: {{learning_rate: 1.0e-3, per_device_train_batch_size: 2, max_steps: 4, logging_steps: 1,
           profile_steps: {profile_steps}}}
output: {{output_dir: {tmp_path / 'run'}}}
""")
    return config


def test_profile_steps_write_a_trace_of_those_steps(tmp_path, qft_bin, tiny_model):
    run([qft_bin, write_config(tmp_path, tiny_model, "[2, 3]")])
    trace_path = tmp_path / "run" / "profile" / "trace_rank0.json"
    trace = json.loads(trace_path.read_text())
    events = trace["traceEvents"]
    steps = sorted(e["name"] for e in events if e.get("name", "").startswith("ProfilerStep#"))
    assert steps == ["ProfilerStep#2", "ProfilerStep#3"]
    ranges = {e["name"]: (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name", "").startswith("ProfilerStep#")}
    ops = [e for e in events if e.get("cat") == "cpu_op"]
    # The ATen ops of the forward and backward, inside the steps' ranges.
    names = {e["name"] for e in ops}
    assert {"aten::mm", "aten::copy_"} <= names, sorted(names)[:50]
    lo, hi = min(r[0] for r in ranges.values()), max(r[1] for r in ranges.values())
    assert all(lo <= e["ts"] and e["ts"] + e["dur"] <= hi + 1 for e in ops)
    # resolved config records the key; the run's other outputs are as usual
    assert "profile_steps" in (tmp_path / "run" / "qft_config.yaml").read_text()

    summary = run([sys.executable, SUMMARY, trace_path]).stdout
    assert "Steps 2..3 (2 profiled)" in summary
    assert "No GPU activity in the trace" in summary
    gemm = [line for line in summary.splitlines() if line.startswith("| GEMM |")]
    assert gemm and float(gemm[0].split("|")[2]) > 0 and int(gemm[0].split("|")[4]) > 0, summary


@pytest.mark.parametrize("value, message", [
    ("[3, 2]", "last step 2 is before first step 3"),
    ("[0, 2]", "first step 0 is not positive"),
    ("[-1, 2]", "first step -1 is not positive"),
    ("[2]", "not a list of two steps"),
    ("5", "not a list of two steps"),
    ("[1, x]", "'x' is not an integer"),
    ("[1.5, 2]", "'1.5' is not an integer"),
])
def test_bad_profile_steps_are_config_errors(tmp_path, qft_bin, tiny_model, value, message):
    config = write_config(tmp_path, tiny_model, value)
    result = run([qft_bin, "train", config, "--check"], check=False)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert f"{config}:5: 'training.profile_steps'" in result.stderr and message in result.stderr, result.stderr
    assert "expected [first, last]" in result.stderr
    assert not (tmp_path / "run").exists()


def kernel(name, ts, dur, device=0):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": device, "tid": 7, "ts": ts, "dur": dur,
            "args": {"device": device}}


def test_summary_of_a_gpu_trace(tmp_path):
    # Window 1000..1100 us (two steps); 60 us of kernels on one device, 10 of them overlapping on two streams.
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#5", "pid": 1, "tid": 1, "ts": 1000, "dur": 50},
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#6", "pid": 1, "tid": 1, "ts": 1050, "dur": 50},
        {"ph": "X", "cat": "gpu_user_annotation", "name": "ProfilerStep#5", "pid": 0, "tid": 9, "ts": 900, "dur": 400},
        kernel("nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_TNT", 1000, 20),
        kernel("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", 1005, 10),  # inside the first: busy +0
        kernel("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128>>", 1030, 8),
        kernel("rms_norm_forward_kernel2", 1040, 2),
        kernel("qk_norm_rope_forward_kernel", 1042, 2),
        kernel("swiglu_backward_kernel", 1044, 2),
        kernel("cross_entropy_kernel", 1050, 4),
        kernel("adamw_kernel", 1060, 4),
        kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 1070, 4),
        kernel("nf4_dequantize_kernel", 1080, 2),
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)", "pid": 0, "tid": 8, "ts": 1090,
         "dur": 1, "args": {"device": 0}},
        kernel("void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float>>", 1095, 1),
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 1001, "dur": 30},
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = subprocess.run([sys.executable, SUMMARY, trace, "--top", "3"], capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:5]]
            for line in out.splitlines() if line.startswith("| ") and not line.startswith("| category")
            and not line.startswith("| kernel") and not line.startswith("| `")}
    assert rows["GEMM"] == ["0.030", "50.0", "2"]
    assert rows["attention"] == ["0.008", "13.3", "1"]
    for category in ("norm", "rope", "swiglu", "NF4 dequant"):
        assert rows[category] == ["0.002", "3.3", "1"], category
    for category in ("cross-entropy", "optimizer", "NCCL"):
        assert rows[category] == ["0.004", "6.7", "1"], category
    assert rows["copies"] == ["0.001", "1.7", "1"] and rows["other elementwise"] == ["0.001", "1.7", "1"]
    assert rows["**all GPU kernels**"] == ["0.060", "100.0", "12"]
    assert "Steps 5..6 (2 profiled), window 0.100 ms (0.050 ms per step)" in out
    # Busy = union of the intervals = 60 - 10 (the overlap) = 50 us of the 100 us window.
    assert "GPU busy: 0.050 ms of 0.100 ms" in out and "GPU idle fraction: 50.0%" in out
    assert "| `nvjet_hsh_256x128_64x4_2x1_v_bz_coopA_TNT` | GEMM | 0.020 | 1 |" in out


def test_summary_says_which_cpu_op_the_gpu_waited_on(tmp_path):
    # Window 0..100 us. Kernels 0-10, 30-40, 45-100: gaps 10-30 (during aten::item, inside aten::mm's
    # caller) and 40-45 (no CPU op).
    events = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1, "ts": 0, "dur": 100},
        kernel("gemm_a", 0, 10), kernel("gemm_b", 30, 10), kernel("rms_norm_forward_kernel2", 45, 55),
        {"ph": "X", "cat": "cpu_op", "name": "aten::_local_scalar_dense_outer", "pid": 1, "tid": 1, "ts": 5, "dur": 30},
        {"ph": "X", "cat": "cpu_op", "name": "aten::item", "pid": 1, "tid": 1, "ts": 8, "dur": 20},
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    out = subprocess.run([sys.executable, SUMMARY, trace, "--gaps", "1"], capture_output=True, text=True,
                         check=True).stdout
    assert "GPU idle gaps: 2, 0.025 ms in all." in out, out
    assert "| `aten::item` | 0.020 | 1 |" in out and "| `(no CPU op: between ops)` | 0.005 | 1 |" in out, out
    assert "| 0.010 | 20 | `aten::item` | `gemm_a` | `gemm_b` |" in out, out
    assert "| 0.040 |" not in out  # only the longest


def test_summary_rejects_a_file_that_is_not_a_trace(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"traceEvents\": 3}")
    result = subprocess.run([sys.executable, SUMMARY, bad], capture_output=True, text=True)
    assert result.returncode != 0 and "no traceEvents list" in result.stderr
