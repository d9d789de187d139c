"""`qft-dist prepare` against transformers: every sample of the demo data set in the token cache must
have exactly the ids of apply_chat_template + HF tokenizers, and the target mask of the documented rule
(docs/DATA.md): a token is a target when its first character lies in an assistant turn, from after
"<|im_start|>assistant\\n" through "<|im_end|>" -- all turns, or only the last with mask_history, and
without the empty think block (and without any reasoning) when enable_thinking is false.

The cache is in shuffled training order, so samples are compared as multisets.
"""
import collections
import json
from pathlib import Path

import h5py
import pytest

from conftest import BUILD_DIR, SOURCE_DIR, run

EMPTY_THINK = "<think>\n\n</think>\n\n"
ASSISTANT_HEADER = "<|im_start|>assistant\n"


def to_hf_messages(record):
    """The three demo formats as HF messages (the rules of docs/DATA.md)."""
    if "messages" in record:
        return record["messages"], record.get("tools")
    if "conversations" in record:
        roles = {"human": "user", "gpt": "assistant", "system": "system", "observation": "tool", "tool": "tool"}
        messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
        messages += [{"role": roles[t["from"]], "content": t["value"]} for t in record["conversations"]]
        return messages, None
    messages = [{"role": "system", "content": record["system"]}] if record.get("system") else []
    for prompt, answer in record.get("history", []):
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    prompt = record["instruction"] + ("\n" + record["input"] if record.get("input") else "")
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]
    return messages, None


def without_reasoning(messages):
    out = []
    for m in messages:
        m = dict(m)
        if m["role"] == "assistant":
            if m.get("reasoning_content") is None and "</think>" in m["content"]:
                m["content"] = m["content"].split("</think>")[-1].lstrip("\n")
            m["reasoning_content"] = ""
        out.append(m)
    return out


def assistant_spans(text):
    spans, start = [], 0
    while (header := text.find(ASSISTANT_HEADER, start)) >= 0:
        begin = header + len(ASSISTANT_HEADER)
        end = text.index("<|im_end|>", begin) + len("<|im_end|>")
        spans.append((begin, end))
        start = end
    return spans


def expected_sample(record, hf_pair, mask_history, enable_thinking):
    chat, fast = hf_pair
    messages, tools = to_hf_messages(record)
    if not enable_thinking:
        messages = without_reasoning(messages)
    text = chat.apply_chat_template(messages, tools=tools, tokenize=False)
    spans = assistant_spans(text)
    if mask_history:
        spans = spans[-1:]
    if not enable_thinking:
        spans = [(b + len(EMPTY_THINK), e) if text.startswith(EMPTY_THINK, b) else (b, e) for b, e in spans]
    encoding = fast.encode(text, add_special_tokens=False)
    mask = tuple(int(any(b <= start < e for b, e in spans)) for start, _ in encoding.offsets)
    return tuple(encoding.ids), mask


@pytest.mark.parametrize("mask_history,enable_thinking", [(False, True), (True, True), (False, False)])
def test_prepare_matches_transformers(qft_bin, hf, tokenizer_dir, tmp_path, mask_history, enable_thinking):
    demo = tmp_path / "demo"
    run([qft_bin, "prepare", "--write-demo-data", demo])
    files = sorted(demo.glob("*.jsonl"))
    assert len(files) == 3
    config = tmp_path / "config.yaml"
    config.write_text(
        "data:\n  datasets:\n" + "".join(f"    - path: {f}\n" for f in files) +
        f"  max_seq_length: 4096\n  cache_dir: {tmp_path / 'cache'}\n  mask_history: {str(mask_history).lower()}\n"
        f"  enable_thinking: {str(enable_thinking).lower()}\n")
    result = run([qft_bin, "prepare", config, "--tokenizer", tokenizer_dir / "tokenizer.json"])
    assert "samples: 360" in result.stdout, result.stdout

    (cache,) = (tmp_path / "cache").glob("tokens-*.h5")
    with h5py.File(cache, "r") as h5:
        ids, mask, offsets = h5["input_ids"][:], h5["target_mask"][:], h5["sample_offsets"][:]
        metadata = json.loads(h5.attrs["qft_metadata"])
    assert metadata["samples"] == 360
    got = collections.Counter(
        (tuple(int(x) for x in ids[b:e]), tuple(int(x) for x in mask[b:e])) for b, e in zip(offsets[:-1], offsets[1:]))

    expected = collections.Counter()
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            expected[expected_sample(json.loads(line), hf, mask_history, enable_thinking)] += 1
    assert got == expected
