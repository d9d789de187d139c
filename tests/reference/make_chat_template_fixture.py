#!/usr/bin/env python3
"""Writes tests/fixtures/chat_template_cases.jsonl: varied conversations rendered by transformers'
apply_chat_template with the real Qwen3 tokenizer files, so the C++ template is checked byte for byte.

Deterministic (seeded); rerun after changing the generator and commit the output:
    python3 tests/reference/make_chat_template_fixture.py [--tokenizer-dir DIR] [--out FILE]
Without --tokenizer-dir it uses the committed tests/fixtures/qwen3-tokenizer (tokenizer.json unpacked from
its .xz into a temporary directory). test_chat_template_fixture.py regenerates it and compares.
Each line: {"id", "messages", "tools"?, "add_generation_prompt", "enable_thinking"?, "expected",
"expected_ids"? (HF `tokenizers` ids of `expected`, for every 6th case)}.
"""
import argparse
import json
import lzma
import os
import random
import shutil
import tempfile

from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORDS_EN = ["hello", "world", "the", "quick", "brown", "fox", "model", "train", "data", "token",
            "weather", "Paris", "compute", "why", "sky", "blue", "GPU", "loss", "42", "3.14"]
WORDS_ZH = ["你好", "世界", "天气", "北京", "模型", "训练", "数据", "为什么", "天空", "蓝色", "谢谢", "请问"]
ODD = ["  ", "\n", "\n\n", "\t", "😀", "é", "ß", "\"quoted\"", "back\\slash", "<b>", "&amp;", "\u00a0",
       "\u200b", "ﬁ", "Ω", "\r\n", "{\"a\": 1}"]
SPECIAL_LIKE = ["<tool_response>", "</tool_response>", "<think>", "</think>"]


def words(rng, n_min=1, n_max=8):
    out = []
    for _ in range(rng.randint(n_min, n_max)):
        r = rng.random()
        if r < 0.55:
            out.append(rng.choice(WORDS_EN))
        elif r < 0.85:
            out.append(rng.choice(WORDS_ZH))
        else:
            out.append(rng.choice(ODD))
    sep = rng.choice([" ", " ", "", "\n"])
    return sep.join(out)


def padded(rng, text):
    """Leading/trailing newlines exercise the template's strip('\\n') / lstrip('\\n') rules."""
    return rng.choice(["", "", "\n", "\n\n"]) + text + rng.choice(["", "", "\n", " \n"])


def json_value(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.45:
        return rng.choice([
            rng.randint(-1000, 1000), rng.random() * 10 ** rng.randint(-8, 20), 1.0, 0.5, -0.0, 1e16, 1e-5,
            123456789.125, 2 ** 53, True, False, None, words(rng, 1, 3), "", "line\nbreak\t\u0001\u001f\u007f",
            "中文\"引号\"", 1e22, 0.1 + 0.2, 100.0, 1e15, 12345678901234567890,
        ])
    if r < 0.75:
        return {rng.choice(["city", "unit", "q", "n", "城市", "opts", "x y", "a\"b"]) + str(i): json_value(rng, depth + 1)
                for i in range(rng.randint(0, 4))}
    return [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def make_tool(rng, name):
    props = {}
    for i in range(rng.randint(0, 3)):
        props[f"p{i}"] = {"type": rng.choice(["string", "number", "integer", "boolean"]),
                          "description": words(rng, 1, 5)}
        if rng.random() < 0.3:
            props[f"p{i}"]["enum"] = [words(rng, 1, 1) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.2:
            props[f"p{i}"]["default"] = json_value(rng, 2)
    fn = {"name": name, "description": words(rng, 2, 8),
          "parameters": {"type": "object", "properties": props, "required": sorted(props)[:1]}}
    if rng.random() < 0.15:
        return fn  # a bare function schema is also accepted by the template
    return {"type": "function", "function": fn}


def make_tool_call(rng, names):
    name = rng.choice(names)
    if rng.random() < 0.3:
        args = json.dumps(json_value(rng, 1), ensure_ascii=rng.random() < 0.5)  # string arguments stay raw
    else:
        args = {f"arg{i}": json_value(rng, 1) for i in range(rng.randint(0, 3))}
    call = {"name": name, "arguments": args}
    if rng.random() < 0.75:
        call = {"type": "function", "function": call}
        if rng.random() < 0.5:
            call["id"] = f"call_{rng.randint(0, 9999)}"
    return call


def assistant_message(rng, tool_names):
    msg = {"role": "assistant"}
    content = words(rng, 0, 15)
    style = rng.random()
    if style < 0.25:
        msg["reasoning_content"] = padded(rng, words(rng, 0, 10))
        content = padded(rng, content)
    elif style < 0.5:
        # inline thinking; sometimes without the opening tag, sometimes with extra text around it
        reasoning = words(rng, 0, 10)
        prefix = rng.choice(["<think>", "<think>\n", "", "pre<think>\n\n"])
        content = prefix + reasoning + rng.choice(["</think>", "\n</think>", "\n\n</think>\n\n"]) + padded(rng, content)
        if rng.random() < 0.1:
            content += "</think>tail"
    elif style < 0.55:
        content = padded(rng, content)
    msg["content"] = content
    if tool_names and rng.random() < 0.35:
        msg["tool_calls"] = [make_tool_call(rng, tool_names) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.3:
            msg["content"] = ""
    return msg


def user_content(rng):
    r = rng.random()
    if r < 0.05:
        return "<tool_response>" + words(rng, 1, 4) + "</tool_response>"  # looks like a tool turn: not a real query
    if r < 0.08:
        return rng.choice(SPECIAL_LIKE) + words(rng, 1, 4)
    return words(rng, 1, 12)


def conversation(rng):
    use_tools = rng.random() < 0.35
    tool_names = [f"tool_{i}" for i in range(rng.randint(1, 3))] if use_tools else []
    tools = [make_tool(rng, n) for n in tool_names] if use_tools else None
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": rng.choice(["", words(rng, 1, 12)])})
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.05:
            messages.append({"role": "system", "content": words(rng, 1, 5)})  # a system turn mid-conversation
        messages.append({"role": "user", "content": user_content(rng)})
        if rng.random() < 0.1:
            continue  # two user turns in a row
        msg = assistant_message(rng, tool_names or (["f"] if rng.random() < 0.1 else []))
        messages.append(msg)
        if msg.get("tool_calls"):
            for _ in range(rng.randint(1, 3)):
                messages.append({"role": "tool", "content": rng.choice([words(rng, 1, 6), json.dumps(json_value(rng), ensure_ascii=False)])})
            if rng.random() < 0.8:
                messages.append(assistant_message(rng, tool_names))
    if rng.random() < 0.25 and messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": words(rng, 1, 8)})
    if rng.random() < 0.03:
        messages = [m for m in messages if m["role"] != "user"] or [{"role": "assistant", "content": "only"}]
    return messages, tools


def committed_tokenizer_dir(directory):
    """tests/fixtures/qwen3-tokenizer with tokenizer.json unpacked, in `directory`."""
    fixture = os.path.join(ROOT, "tests/fixtures/qwen3-tokenizer")
    with open(os.path.join(fixture, "tokenizer.json.xz"), "rb") as packed:
        data = lzma.decompress(packed.read())
    with open(os.path.join(directory, "tokenizer.json"), "wb") as out:
        out.write(data)
    shutil.copy(os.path.join(fixture, "tokenizer_config.json"), directory)
    return directory


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer-dir", default=None)
    parser.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/chat_template_cases.jsonl"))
    parser.add_argument("--cases", type=int, default=240)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_dir = args.tokenizer_dir or committed_tokenizer_dir(scratch)
        hf = AutoTokenizer.from_pretrained(tokenizer_dir)
        fast = Tokenizer.from_file(os.path.join(tokenizer_dir, "tokenizer.json"))
        write_cases(hf, fast, args.out, args.cases)
    print(f"wrote {args.cases} cases to {args.out}")


def write_cases(hf, fast, out_path, cases):
    rng = random.Random(20260522)
    handwritten = [
        ([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}], None),
        ([{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nR1\n</think>\n\nA1"},
          {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "reasoning_content": "R2"}], None),
        ([{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}], None),
        ([{"role": "user", "content": "天气?"},
          {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
          {"role": "tool", "content": "{\"temp\": 20}"}, {"role": "tool", "content": "sunny"}],
         [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]),
        # an empty tools list renders no tools block
        ([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}], []),
        # an unclosed <think> is plain content
        ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>unfinished"}], None),
        # an empty reasoning_content wins over inline thinking, which then stays in the content
        ([{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nR\n</think>\n\nA", "reasoning_content": ""}], None),
        # a tool result first, no user query at all
        ([{"role": "tool", "content": "r"}, {"role": "assistant", "content": "A", "reasoning_content": "R"}], None),
        # multi-step tool use after the last query keeps every reasoning; a user turn that is a wrapped
        # tool response is not a query
        ([{"role": "user", "content": "Q"},
          {"role": "assistant", "content": "", "reasoning_content": "R1", "tool_calls": [{"name": "f", "arguments": "{}"}]},
          {"role": "user", "content": "<tool_response>\nx\n</tool_response>"},
          {"role": "assistant", "content": "A", "reasoning_content": "R2"}], None),
    ]
    with open(out_path, "w", encoding="utf-8") as out:
        for case_id in range(cases):
            if case_id < len(handwritten):
                messages, tools = handwritten[case_id]
            else:
                messages, tools = conversation(rng)
            add_generation_prompt = messages[-1]["role"] != "assistant" if case_id < len(handwritten) else rng.random() < 0.4
            thinking = rng.choice([None, True, False])
            kwargs = {} if thinking is None else {"enable_thinking": thinking}
            expected = hf.apply_chat_template(messages, tools=tools, tokenize=False,
                                              add_generation_prompt=add_generation_prompt, **kwargs)
            case = {"id": case_id, "messages": messages}
            if tools is not None:
                case["tools"] = tools
            case["add_generation_prompt"] = add_generation_prompt
            if thinking is not None:
                case["enable_thinking"] = thinking
            case["expected"] = expected
            if case_id % 6 == 0:
                case["expected_ids"] = fast.encode(expected, add_special_tokens=False).ids
            out.write(json.dumps(case, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
