"""Input fidelity through the whole data path: records that no fixture holds, written to JSONL, go through
`qft-dist prepare` (reader, the one message parser, template, tokenizer, masks, token cache) and must give
exactly the ids and target masks of transformers' apply_chat_template + HF tokenizers on the same records
as Python's json reads them.

The corpus (built below) has combining marks right after special tokens and at the start of assistant
turns (including marks NFC reorders), keys that are equal only after NFC, non-string tool contents,
integers beyond 64 bits, floats beyond the double range, tool-call variants and every role.

Each record says what qft does with it: "render" (ids and mask must match transformers; transformers must
render it too) or "refuse" (prepare skips it with a named problem). A refused record also says whether
transformers raises on it: the few that transformers renders silently wrong (a role it drops, a tool call
without a name) are refused on purpose -- docs/DATA.md lists them. Assistant turns with null content are
rendered as "" (transformers raises on those: it drops None-valued keys and the template then fails).
"""
import collections
import json

import h5py
import pytest

from conftest import SOURCE_DIR, run

ASSISTANT_HEADER = "<|im_start|>assistant\n"
EMPTY_THINK = "<think>\n\n</think>\n\n"
U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "ok"}
BIG = 123456789012345678901234567890
TOOLS = [{"type": "function", "function": {"name": "f", "description": "caf\u00e9 / cafe\u0301",
                                           "parameters": {"type": "object", "properties": {
                                               "\u00e9": {"type": "integer", "maximum": BIG},
                                               "e\u0301": {"type": "number", "maximum": 1e400, "minimum": -1e-400},
                                               "x": {"type": "number", "default": 1.5e-7, "multipleOf": 100.0}}}}}]


def call(**kwargs):
    return {"role": "assistant", "content": "", "tool_calls": [kwargs]}


def corpus():
    """(name, record, qft_expect, transformers_raises)."""
    render = []
    for name, messages, tools in [
        ("mark after <think> in user", [{"role": "user", "content": "<think>\u0301x</think>\u0301 <|im_end|>\u0301y"}, A], None),
        ("mark after special in assistant", [U, {"role": "assistant", "content": "a<|im_end|>\u0301b<|endoftext|>\u0300"}], None),
        ("marks open the answer", [U, {"role": "assistant", "content": "\u0301\u0316answer"}], None),
        ("marks NFC reorders", [U, {"role": "assistant", "content": "e\u0301\u0316 q\u0307\u0323 \u1100\u1161\u11a8"}], None),
        ("composed and decomposed", [{"role": "user", "content": "caf\u00e9 cafe\u0301 \u212b \u0041\u030a"},
                                     {"role": "assistant", "content": "<think>\u0301r\u0301</think>\u0301e\u0301"}], None),
        ("reasoning with marks", [U, {"role": "assistant", "content": "e\u0301", "reasoning_content": "\u0301e\u0301"}], None),
        ("NFC-colliding argument keys", [U, call(type="function", function={"name": "f", "arguments": {"\u00e9": 1, "e\u0301": 2}})], TOOLS),
        ("big integers and overflowing floats", [U, call(name="f", arguments={"n": BIG, "m": -99999999999999999999,
                                                                           "inf": 1e400, "tiny": 1e-400, "f": 100.0})], TOOLS),
        ("tool content list of parts", [U, call(name="f", arguments="{}"),
                                        {"role": "tool", "content": [{"type": "text", "text": "it's \"q\" \u200b\x01\u0085\u00a0\U0001F600"}]}, A], None),
        ("tool content dict", [U, call(name="f", arguments={}),
                               {"role": "tool", "content": {"a": [True, False, None, 1.5, 1e400, -1e400, BIG], "b": "'"}}, A], None),
        ("tool content scalars", [U, call(name="f", arguments={}), {"role": "tool", "content": 7},
                                  {"role": "tool", "content": False}, {"role": "tool", "content": None},
                                  {"role": "tool"}, {"role": "tool", "content": 2.5e-5}, A], None),
        ("function {} wrapper ignored", [U, call(function={}, name="f", arguments={"a": 1})], None),
        ("function null wrapper ignored", [U, call(function=None, name="f", arguments={"a": 1})], None),
        ("arguments as a string, a list, a number, null", [U, {"role": "assistant", "content": "c", "tool_calls": [
            {"name": "f", "arguments": "{\"raw\":  1}"}, {"name": "g", "arguments": [1, "\u00e9"]},
            {"name": "h", "arguments": 5}, {"name": "k", "arguments": None}]}], None),
        ("name that is a number", [U, call(name=5, arguments={})], None),
        ("multi-step tools", [{"role": "system", "content": "S"}, U, call(name="f", arguments={}),
                              {"role": "user", "content": "<tool_response>\nr\n</tool_response>"},
                              {"role": "assistant", "content": "<think>\nt\n</think>\n\ndone"}], TOOLS),
        ("system later and consecutive tools", [U, A, {"role": "system", "content": "mid"}, U,
                                                call(name="f", arguments={}), {"role": "tool", "content": "1"},
                                                {"role": "tool", "content": "2"}, A], None),
        ("reasoning aliases", [U, {"role": "assistant", "content": "a", "thinking": "t1"}, U,
                               {"role": "assistant", "content": "b", "reasoning": "t2"}], None),
        ("empty tool_calls on a user", [{"role": "user", "content": "x", "tool_calls": []}, A], None),
    ]:
        record = {"messages": messages}
        if tools is not None:
            record["tools"] = tools
        render.append((name, record, "render", False))
    null_content = ("assistant null content with tool calls",
                    {"messages": [U, {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {}}]}]},
                    "render", True)
    refuse = [
        ("user content list", [{"role": "user", "content": [{"type": "text", "text": "x"}]}, A], True),
        ("user content dict", [{"role": "user", "content": {"a": 1}}, A], True),
        ("user content number", [{"role": "user", "content": 5}, A], True),
        ("user content null", [{"role": "user", "content": None}, A], True),
        ("system content list", [{"role": "system", "content": [{"type": "text", "text": "s"}]}, U, A], True),
        ("assistant content list", [U, {"role": "assistant", "content": [{"type": "text", "text": "a"}]}], True),
        ("assistant content number", [U, {"role": "assistant", "content": 5}], True),
        ("reasoning not a string", [U, {"role": "assistant", "content": "a", "reasoning_content": ["r"]}], True),
        ("tool_calls not a list", [U, {"role": "assistant", "content": "a", "tool_calls": {"name": "f", "arguments": {}}}], True),
        ("function not an object", [U, call(function="x", name="f", arguments={})], True),
        ("arguments missing", [U, call(name="f")], True),
        ("developer role", [{"role": "developer", "content": "d"}, U, A], False),
        ("function role", [U, A, {"role": "function", "content": "r"}, A], False),
        ("unknown role", [U, {"role": "bot", "content": "b"}, A], False),
        ("tool call without a name", [U, call(arguments={})], False),
        ("tool call with a null name", [U, call(name=None, arguments={})], False),
        ("tool calls on a user message", [{"role": "user", "content": "x", "tool_calls": [{"name": "f", "arguments": {}}]}, A], False),
    ]
    return render + [null_content] + [(name, {"messages": m}, "refuse", raises) for name, m, raises in refuse]


def for_transformers(messages):
    """qft renders null assistant content as ""; transformers raises on it, so compare with ""."""
    return [dict(m, content="") if m.get("role") == "assistant" and m.get("content", "") is None else m for m in messages]


def without_reasoning(messages):
    out = []
    for m in messages:
        m = dict(m)
        if m["role"] == "assistant":
            for alias in ("thinking", "reasoning"):
                m.pop(alias, None)
            if m.get("reasoning_content") is None and "</think>" in m["content"]:
                m["content"] = m["content"].split("</think>")[-1].lstrip("\n")
            m["reasoning_content"] = ""
        out.append(m)
    return out


def expected(record, hf_pair, enable_thinking):
    chat, fast = hf_pair
    messages = for_transformers(record["messages"])
    if not enable_thinking:
        messages = without_reasoning(messages)
    text = chat.apply_chat_template(messages, tools=record.get("tools"), tokenize=False)
    spans, start = [], 0
    while (header := text.find(ASSISTANT_HEADER, start)) >= 0:
        begin = header + len(ASSISTANT_HEADER)
        # The turn's own <|im_end|> (contents may hold the literal text): the one followed by "\n" and the
        # next turn or the end.
        end = begin
        while not text.startswith(("<|im_end|>\n<|im_start|>", ), end) and text[end:] != "<|im_end|>\n":
            end = text.index("<|im_end|>", end + 1)
        end += len("<|im_end|>")
        spans.append((begin + len(EMPTY_THINK) if not enable_thinking and text.startswith(EMPTY_THINK, begin) else begin, end))
        start = end
    encoding = fast.encode(text, add_special_tokens=False)
    mask = tuple(int(any(b <= s < e for b, e in spans)) for s, _ in encoding.offsets)
    return tuple(encoding.ids), mask


def transformers_raises(record, hf_pair):
    try:
        hf_pair[0].apply_chat_template(record["messages"], tools=record.get("tools"), tokenize=False)
    except Exception:  # noqa: BLE001 -- jinja2 and Python errors alike
        return True
    return False


def test_corpus_classification_matches_transformers(hf):
    for name, record, qft_expect, raises in corpus():
        assert transformers_raises(record, hf) == raises, name
        if qft_expect == "render":
            assert not transformers_raises({**record, "messages": for_transformers(record["messages"])}, hf), name


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_prepare_matches_transformers_on_adversarial_records(qft_bin, hf, tokenizer_dir, tmp_path, enable_thinking):
    records = corpus()
    data = tmp_path / "fidelity.jsonl"
    # Python's json writes 1e400 as Infinity, which Python's json (and qft) read back as inf.
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for _, r, _, _ in records), encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  datasets:\n    - path: {data}\n  max_seq_length: 8192\n"
                      f"  cache_dir: {tmp_path / 'cache'}\n  enable_thinking: {str(enable_thinking).lower()}\n")
    result = run([qft_bin, "prepare", config, "--tokenizer", tokenizer_dir / "tokenizer.json"])
    rendered = [r for _, r, expect, _ in records if expect == "render"]
    assert f"samples: {len(rendered)}" in result.stdout, result.stdout + result.stderr

    (cache,) = (tmp_path / "cache").glob("tokens-*.h5")
    with h5py.File(cache, "r") as h5:
        ids, mask, offsets = h5["input_ids"][:], h5["target_mask"][:], h5["sample_offsets"][:]
        metadata = json.loads(h5.attrs["qft_metadata"])
    assert sum(metadata["skipped"].values()) == len(records) - len(rendered), metadata["skipped"]
    got = collections.Counter(
        (tuple(int(x) for x in ids[b:e]), tuple(int(x) for x in mask[b:e])) for b, e in zip(offsets[:-1], offsets[1:]))
    want = collections.Counter(expected(r, hf, enable_thinking) for r in rendered)
    missing = want - got
    names = [name for name, r, expect, _ in records if expect == "render" and expected(r, hf, enable_thinking) in missing]
    assert got == want, f"records whose ids or mask differ from transformers: {names}"


def test_template_command_shows_what_prepare_trains_on(qft_bin, hf, tokenizer_dir, tmp_path):
    records = [r for _, r, expect, _ in corpus() if expect == "render"]
    data = tmp_path / "fidelity.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    for index in (0, 3, 6, 8):
        shown = run([qft_bin, "template", data, "--index", index, "--tokenizer", tokenizer_dir]).stdout
        header, body = shown.split("\n", 1)
        body, footer = body.rsplit("-- ", 1)
        text = hf[0].apply_chat_template(for_transformers(records[index]["messages"]), tools=records[index].get("tools"),
                                         tokenize=False)
        assert body.replace("\u00ab", "").replace("\u00bb", "") == text, index
        ids, mask = expected(records[index], hf, True)
        assert footer.startswith(f"{len(ids)} tokens, {sum(mask)} targets"), footer
