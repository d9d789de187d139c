#!/usr/bin/env python3
"""Where the time of profiled training steps goes: a summary of a trace from training.profile_steps.

usage: profile_summary.py TRACE [--top N] [--gaps N]

TRACE is output_dir/profile/trace_rank<r>.json (a Chrome trace written by libtorch's Kineto profiler).
With GPU activity in the trace it prints, as a markdown table, the GPU kernel time per category
(GEMM / attention / norm / rope / swiglu / cross-entropy / optimizer / NF4 dequant / NCCL / copies /
other elementwise, by kernel name), its share of the summed kernel time and the launch count, then the
GPU's busy and idle fractions over the profiled window: the span of the ProfilerStep#<n> ranges (else
from the first to the last GPU event), busy = the union of kernel/memcpy/memset intervals per device.
A large idle fraction with short kernels means the step is launch-bound (the CPU cannot issue kernels
as fast as the GPU runs them). --gaps N says where that idle time comes from: the GPU's idle gaps of the
first device grouped by the innermost CPU op running when each began (aten::item waiting for a result, a
pinned-memory copy, the optimizer's launches...), and the N longest with the kernels on either side.
A CPU-only trace (a CPU run) gets the same table over the ATen ops' self time (time in the op minus the
ops it called) instead.
"""
import argparse
import json
import re
import sys
from collections import defaultdict

# First match wins, on the lowercased kernel or op name. The qft kernels (kernels/*.cu) are named
# after what they do; cuBLAS/CUTLASS GEMMs carry gemm/nvjet/xmma/cutlass in their names; NCCL kernels
# start with ncclDevKernel/ncclKernel.
CATEGORIES = [
    ("NCCL", r"nccl"),
    ("optimizer", r"adam|multi_tensor_apply|_foreach_"),
    ("cross-entropy", r"cross_entropy|log_softmax|nll_loss|logsumexp"),
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("rope", r"rope|rotary"),
    ("norm", r"rms_norm|rmsnorm|layer_norm|layernorm"),
    ("swiglu", r"swiglu|silu"),
    ("NF4 dequant", r"nf4|dequantize"),
    ("GEMM", r"gemm|nvjet|xmma|cutlass|cublas|matmul|aten::(?:mm|addmm_?|bmm|baddbmm|linear)$|sm\d\d_"),
    ("copies", r"memcpy|memset|copy|cat_?array|aten::(?:cat|to|_to_copy|index_select|contiguous|clone)$"),
    ("other elementwise", r""),
]
CATEGORY_PATTERNS = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
GPU_CATEGORIES = {"kernel", "gpu_memcpy", "gpu_memset"}
STEP_RANGE = re.compile(r"^ProfilerStep#(\d+)$")


def category_of(name):
    lowered = name.lower()
    for category, pattern in CATEGORY_PATTERNS:
        if pattern.search(lowered):
            return category
    return CATEGORIES[-1][0]


def load_events(path):
    try:
        with open(path) as f:
            trace = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{path}: not a readable JSON trace ({e})")
    events = trace.get("traceEvents") if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        sys.exit(f"{path}: no traceEvents list (is this a Chrome trace from training.profile_steps?)")
    # Complete events ("X") with a duration are the ones that take time.
    return [e for e in events if isinstance(e, dict) and e.get("ph") == "X" and "dur" in e and "ts" in e]


def union_length(intervals, lo, hi):
    """Total length of the union of [start, end) intervals, clipped to [lo, hi)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        start, end = max(start, lo), min(end, hi)
        if end <= start:
            continue
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def self_times(ops):
    """(op, self time): each CPU op's duration minus that of the ops nested directly inside it (per thread)."""
    result = []
    by_thread = defaultdict(list)
    for op in ops:
        by_thread[(op.get("pid"), op.get("tid"))].append(op)
    for thread_ops in by_thread.values():
        thread_ops.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [op, end, children time]
        for op in thread_ops:
            start, end = float(op["ts"]), float(op["ts"]) + float(op["dur"])
            while stack and stack[-1][1] <= start:
                done = stack.pop()
                result.append((done[0], float(done[0]["dur"]) - done[2]))
            if stack:
                stack[-1][2] += min(end, stack[-1][1]) - start
            stack.append([op, end, 0.0])
        result.extend((op, float(op["dur"]) - children) for op, _, children in stack)
    return result


def idle_gaps(kernels, lo, hi):
    """[(start, end, kernel before, kernel after)] where none of `kernels` ([(start, end, name)]) runs,
    inside [lo, hi)."""
    gaps, cursor, last = [], lo, None
    for start, end, name in sorted(kernels):
        if start >= hi:
            if cursor < hi:
                gaps.append((cursor, hi, last, name))
            cursor = hi
            break
        if start > cursor:
            gaps.append((cursor, start, last, name))
        if end > cursor:
            cursor, last = end, name
    if cursor < hi:
        gaps.append((cursor, hi, last, None))
    return gaps


def innermost_ops(events, times):
    """For each of the sorted `times`, the innermost CPU op of the busiest thread running then (one sweep:
    a thread's ops nest)."""
    by_thread = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            by_thread[(e.get("pid"), e.get("tid"))].append((float(e["ts"]), float(e["ts"]) + float(e["dur"]),
                                                              e.get("name", "")))
    ops = sorted(max(by_thread.values(), key=len, default=[]), key=lambda o: (o[0], -o[1]))
    result, stack, i = [], [], 0
    for t in times:
        while i < len(ops) and ops[i][0] <= t:
            while stack and stack[-1][1] <= ops[i][0]:
                stack.pop()
            stack.append(ops[i])
            i += 1
        while stack and stack[-1][1] <= t:
            stack.pop()
        result.append(stack[-1][2] if stack else "(no CPU op: between ops)")
    return result


def gap_report(events, kernels, lo, hi, count):
    """Markdown: the idle gaps of `kernels` ([(start, end, name)], one device) in [lo, hi), by the innermost
    CPU op running at each gap's start, and the `count` longest."""
    gaps = idle_gaps(kernels, lo, hi)
    ops = innermost_ops(events, [g[0] for g in gaps])
    by_op = defaultdict(lambda: [0.0, 0])
    for (start, end, _, _), op in zip(gaps, ops):
        by_op[op][0] += end - start
        by_op[op][1] += 1
    short = lambda name: "—" if name is None else (name if len(name) <= 60 else name[:57] + "...")
    out = ["", f"GPU idle gaps: {len(gaps)}, {sum(g[1] - g[0] for g in gaps) / 1000:.3f} ms in all. By the CPU op "
           "running when each began:", "", "| CPU op | idle ms | gaps |", "|---|---:|---:|"]
    for name, (micros, n) in sorted(by_op.items(), key=lambda kv: -kv[1][0])[:15]:
        out.append(f"| `{name}` | {micros / 1000:.3f} | {n} |")
    out += ["", f"The {count} longest:", "", "| at ms | idle us | CPU op | kernel before | kernel after |",
            "|---:|---:|---|---|---|"]
    for (start, end, before, after), op in sorted(zip(gaps, ops), key=lambda g: g[0][0] - g[0][1])[:count]:
        out.append(f"| {(start - lo) / 1000:.3f} | {end - start:.0f} | `{op}` | `{short(before)}` | `{short(after)}` |")
    return out


def table(rows, total_label, unit_label, count_label):
    """rows: (category, microseconds, count). Markdown, sorted by time."""
    total = sum(t for _, t, _ in rows) or 1.0
    lines = [f"| category | total ms | % of {unit_label} | {count_label} |", "|---|---:|---:|---:|"]
    for category, micros, count in sorted(rows, key=lambda r: -r[1]):
        lines.append(f"| {category} | {micros / 1000:.3f} | {100 * micros / total:.1f} | {count} |")
    lines.append(f"| **{total_label}** | {total / 1000:.3f} | 100.0 | {sum(c for _, _, c in rows)} |")
    return "\n".join(lines)


def summarize(path, top=0, gaps=0):
    events = load_events(path)
    # The CPU-side step ranges (Kineto also mirrors user ranges onto the GPU timeline as gpu_user_annotation).
    steps = sorted((int(m.group(1)), float(e["ts"]), float(e["ts"]) + float(e["dur"]))
                   for e in events if e.get("cat") != "gpu_user_annotation"
                   for m in [STEP_RANGE.match(str(e.get("name", "")))] if m)
    gpu = [e for e in events if e.get("cat") in GPU_CATEGORIES]
    out = [f"# Profile summary: {path}", ""]
    if steps:
        lo, hi = min(s[1] for s in steps), max(s[2] for s in steps)
        out.append(f"Steps {steps[0][0]}..{steps[-1][0]} ({len(steps)} profiled), window {(hi - lo) / 1000:.3f} ms "
                   f"({(hi - lo) / 1000 / len(steps):.3f} ms per step).")
    elif gpu:
        lo = min(float(e["ts"]) for e in gpu)
        hi = max(float(e["ts"]) + float(e["dur"]) for e in gpu)
        out.append(f"No ProfilerStep ranges: window = first to last GPU event, {(hi - lo) / 1000:.3f} ms.")
    else:
        lo = hi = None
    out.append("")

    if gpu:
        per_category = defaultdict(lambda: [0.0, 0])
        per_kernel = defaultdict(lambda: [0.0, 0])
        per_device = defaultdict(list)
        named = defaultdict(list)  # device -> (start, end, kernel name)
        for e in gpu:
            start, dur = float(e["ts"]), float(e["dur"])
            category = category_of(e.get("name", ""))
            per_category[category][0] += dur
            per_category[category][1] += 1
            per_kernel[e.get("name", "")][0] += dur
            per_kernel[e.get("name", "")][1] += 1
            device = (e.get("args") or {}).get("device", e.get("pid"))
            per_device[device].append((start, start + dur))
            named[device].append((start, start + dur, e.get("name", "")))
        rows = [(c, t, n) for c, (t, n) in per_category.items()]
        out.append(table(rows, "all GPU kernels", "GPU kernel time", "launches"))
        window = hi - lo
        busy = sum(union_length(intervals, lo, hi) for intervals in per_device.values())
        capacity = window * len(per_device)
        out.append("")
        out.append(f"GPU busy: {busy / 1000:.3f} ms of {capacity / 1000:.3f} ms "
                   f"({len(per_device)} device{'s' if len(per_device) > 1 else ''} x window) = "
                   f"{100 * busy / capacity:.1f}%; GPU idle fraction: {100 * (1 - busy / capacity):.1f}%")
        launches = sum(n for _, n in per_category.values())
        out.append(f"Mean kernel: {sum(t for t, _ in per_category.values()) / launches:.1f} us over {launches} "
                   f"launches ({launches / max(len(steps), 1):.0f} per step).")
        if top:
            out += ["", f"Top {top} kernels by time:", "", "| kernel | category | total ms | launches |",
                    "|---|---|---:|---:|"]
            for name, (t, n) in sorted(per_kernel.items(), key=lambda kv: -kv[1][0])[:top]:
                short = name if len(name) <= 100 else name[:97] + "..."
                out.append(f"| `{short}` | {category_of(name)} | {t / 1000:.3f} | {n} |")
        if gaps:
            out += gap_report(events, named[min(named, key=str)], lo, hi, gaps)
    else:
        ops = [e for e in events if e.get("cat") == "cpu_op"]
        if not ops:
            sys.exit(f"{path}: the trace has neither GPU kernels nor CPU ops")
        per_category = defaultdict(lambda: [0.0, 0])
        for op, self_time in self_times(ops):
            category = category_of(op.get("name", ""))
            per_category[category][0] += self_time
            per_category[category][1] += 1
        out.append("No GPU activity in the trace (a CPU run): ATen ops' self time per category.")
        out.append("")
        rows = [(c, t, n) for c, (t, n) in per_category.items()]
        out.append(table(rows, "all CPU ops", "CPU op self time", "calls"))
        if lo is not None and hi > lo:
            covered = sum(t for t, _ in per_category.values())
            out.append("")
            out.append(f"CPU ops' self time covers {100 * covered / (hi - lo):.1f}% of the profiled window.")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="output_dir/profile/trace_rank<r>.json")
    parser.add_argument("--top", type=int, default=0, help="also list the N kernels that take the most time")
    parser.add_argument("--gaps", type=int, default=0,
                        help="also say where the GPU's idle time comes from, with its N longest gaps")
    args = parser.parse_args()
    print(summarize(args.trace, args.top, args.gaps))


if __name__ == "__main__":
    main()
