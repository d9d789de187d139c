"""`qft-dist eval --generate` on a tiny random model with a random PEFT adapter (CPU, fp32, greedy).

* the per-item texts of the base and of the base + adapter equal what `qft-dist generate` writes for the
  same prompts (so the scored answers are the generate machinery's, batching included);
* extraction, correctness, accuracy, mean generated tokens and the thinking share equal what this file
  computes from those texts with the same rules, re-implemented here with Python's `re` (the rules'
  tricky cases are checked against the same expectations as tests/text/test_answer_extraction.cpp);
* results.jsonl and summary.json are written, the table is printed;
* a malformed set fails with FILE:LINE before anything is generated and leaves no output directory.
"""
import json
import re

import pytest
import torch
from transformers import Qwen3ForCausalLM
from peft import LoraConfig, get_peft_model

from conftest import BUILD_DIR, run

MAX_NEW = 12
WS = "[ \t\n\r\f\v]"
NUMBER = r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?"
NUMBER_IN_TEXT = re.compile(r"(?<![0-9A-Za-z_.])" + NUMBER)
CHOICE_CUE = re.compile(r"[Aa][Nn][Ss][Ww][Ee][Rr]" + WS + r"*(?:[Ii][Ss]" + WS + r"*)?:?" + WS +
                        r"*\(?([A-Ja-j])(?![A-Za-z0-9_])")
CHOICE_ALONE = re.compile(r"(?<![A-Za-z0-9_])[A-J](?![A-Za-z0-9_])")


def split_thinking(text):
    """(answer part, used thinking): the first <think>...</think> removed, as src/text/answer_extraction.h."""
    op, cl = text.find("<think>"), text.find("</think>")
    if op >= 0 and (cl < 0 or op < cl):
        end = text.find("</think>", op + 7)
        thinking = text[op + 7:] if end < 0 else text[op + 7:end]
        answer = text[:op] + ("" if end < 0 else text[end + 8:])
    elif cl >= 0:
        thinking, answer = text[:cl], text[cl + 8:]
    else:
        thinking, answer = "", text
    return answer, thinking.strip(" \t\n\r\f\v") != ""


def normalize(text):
    text = " ".join(p for p in re.split(WS + "+", text) if p)
    text = "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)
    return text.rstrip(".,;:!? ")


def parse_number(text):
    text = text.strip(" \t\n\r\f\v")
    return float(text.replace(",", "")) if re.fullmatch(NUMBER, text) else None


def last_boxed(text):
    found, at = None, text.find("\\boxed{")
    while at >= 0:
        depth, i = 1, at + 7
        while i < len(text) and depth > 0:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            found = text[at + 7:i - 1]
        at = text.find("\\boxed{", at + 1)
    return found


def extract(rule, answer):
    if rule == "last_number":
        numbers = NUMBER_IN_TEXT.findall(answer)
        return numbers[-1].replace(",", "") if numbers else None
    if rule == "boxed":
        return last_boxed(answer)
    if rule == "exact":
        return normalize(answer)
    cued = CHOICE_CUE.findall(answer)
    if cued:
        return cued[-1].upper()
    alone = CHOICE_ALONE.findall(answer)
    return alone[-1] if alone else None


def canonical(rule, reference):
    written = reference if isinstance(reference, str) else json.dumps(reference)
    if rule == "last_number":
        assert parse_number(written) is not None
        return written.strip(" \t\n\r\f\v").replace(",", "")
    if rule == "choice":
        m = re.fullmatch(r"\(?([A-Ja-j])[.)]?", written.strip(" \t\n\r\f\v"))
        assert m
        return m.group(1).upper()
    assert normalize(written) != ""
    return normalize(written)


def matches(rule, extracted, reference):
    if extracted is None:
        return False
    close = lambda a, b: a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))
    if rule == "last_number":
        return close(parse_number(extracted), parse_number(reference))
    if rule == "boxed":
        return normalize(extracted) == normalize(reference) or close(parse_number(extracted), parse_number(reference))
    if rule == "exact":
        return normalize(extracted) == normalize(reference)
    return extracted == reference


def test_python_rules_agree_with_the_documented_cases():
    """The oracle itself, on the tricky cases the C++ gtests check (same expectations)."""
    num = lambda t: extract("last_number", t)
    assert [num("It costs $1,000 in total."), num("pages 3-5"), num("12,345,6789"), num("1234,567"),
            num("version 1.2.5"), num("x2 and v3"), num("x = -5")] == ["1000", "5", "6789", "567", "1.2", None, "-5"]
    ch = lambda t: extract("choice", t)
    assert [ch("The answer is (B)."), ch("Answer: c"), ch("B. because A is wrong"), ch("answer: D. A good choice."),
            ch("the answer is because"), ch("answers: X, then F"), ch("lower b alone")] == \
        ["B", "C", "A", "D", None, "F", None]
    assert last_boxed("\\boxed{3} and \\boxed{4") == "3" and last_boxed("so \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"
    assert split_thinking("so 5</think>\nAnswer: 6") == ("\nAnswer: 6", True)
    assert split_thinking("<think>maybe 12") == ("", True)
    assert normalize("New\t\tYORK  City!?") == "new york city"


@pytest.fixture(scope="module")
def models(tmp_path_factory, qft_bin):
    root = tmp_path_factory.mktemp("eval-generate")
    model_dir = root / "tiny-untied"
    # A wide init spreads the logits, so greedy choices are not near-ties.
    run([qft_bin, "init-model", "--preset", "tiny-untied", "--dtype", "fp32", "--initializer-range", "0.2",
         "--seed", "5", "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", model_dir])
    torch.manual_seed(1)
    base = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")
    adapter = root / "adapter"
    get_peft_model(base, cfg).save_pretrained(adapter)
    return model_dir, adapter


PROMPTS = [
    {"prompt": "What is 12 times 12?"},
    {"messages": [{"role": "system", "content": "Answer with a letter."},
                  {"role": "user", "content": "Which is a prime? (A) 4 (B) 7"}]},
    {"prompt": "Name the capital of France.", "enable_thinking": False},
    {"prompt": "Box your answer: 1+1"},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "and times 3?"}]},
]
FALLBACK = {"last_number": "1,000", "boxed": "x", "exact": "zzz", "choice": "(A)"}
COMMON = ["--device", "cpu", "--max-new-tokens", str(MAX_NEW), "--batch-size", "2"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, qft_bin, models):
    """`qft-dist generate`'s answers to PROMPTS, of the base and of the base + adapter."""
    model_dir, adapter = models
    tmp_path = tmp_path_factory.mktemp("generated")
    gen = {"base": generate_texts(qft_bin, tmp_path, model_dir, None, "base"),
           "adapter": generate_texts(qft_bin, tmp_path, model_dir, adapter, "adapter")}
    assert [g["text"] for g in gen["base"]] != [g["text"] for g in gen["adapter"]], \
        "the adapter does not change the answers: the test would not test it"
    return gen


def generate_texts(qft_bin, tmp_path, model_dir, adapter, name):
    prompts = tmp_path / f"{name}-prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    out = tmp_path / f"{name}.jsonl"
    cmd = [qft_bin, "generate", "--model", model_dir, "--input", prompts, "--output", out, "--greedy", *COMMON]
    if adapter is not None:
        cmd += ["--adapter", adapter]
    run(cmd)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("rule", ["exact", "last_number", "boxed", "choice"])
def test_scores_equal_generate_texts_scored_in_python(tmp_path, qft_bin, models, generated, rule):
    model_dir, adapter = models
    gen = generated

    # References: items 0 and 3 take the base's own extracted answer, item 1 the adapter's (so the rules
    # must find them: accuracy is not trivially 0), the others a valid answer the tiny model will not give.
    def reference(i):
        source = {0: "base", 3: "base", 1: "adapter"}.get(i)
        if source is not None:
            got = extract(rule, split_thinking(gen[source][i]["text"])[0])
            if got is not None and (rule != "boxed" or normalize(got)) and (rule != "exact" or got):
                return got
        return FALLBACK[rule]
    items = [dict(p, answer=reference(i), id=f"q{i}") for i, p in enumerate(PROMPTS)]
    items[2]["answer"] = 7 if rule in ("last_number", "exact", "boxed") else items[2]["answer"]  # a JSON number
    eval_set = tmp_path / "set.jsonl"
    eval_set.write_text("".join(json.dumps(item) + "\n" for item in items))
    out_dir = tmp_path / "scores"
    result = run([qft_bin, "eval", "--generate", eval_set, "--model", model_dir, "--adapter", adapter,
                  "--extract", rule, "--output-dir", out_dir, *COMMON])

    rows = [json.loads(line) for line in (out_dir / "results.jsonl").read_text().splitlines()]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [r["index"] for r in rows] == list(range(len(PROMPTS)))
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(len(PROMPTS))]
    assert summary["extract"] == rule and summary["items"] == len(PROMPTS)
    by_name = {m["name"]: m for m in summary["models"]}
    assert list(by_name) == ["base", "adapter"]
    for name in ("base", "adapter"):
        texts = [g["text"] for g in gen[name]]
        assert [r[name]["text"] for r in rows] == texts
        want_extracted, want_correct, thinking = [], [], []
        for item, text in zip(items, texts):
            answer, used = split_thinking(text)
            got = extract(rule, answer)
            want_extracted.append(got)
            want_correct.append(matches(rule, got, canonical(rule, item["answer"])))
            thinking.append(used)
        assert [r[name]["extracted"] for r in rows] == want_extracted
        assert [r[name]["correct"] for r in rows] == want_correct
        assert [r[name]["used_thinking"] for r in rows] == thinking
        m = by_name[name]
        assert m["correct"] == sum(want_correct) and m["total"] == len(PROMPTS)
        assert m["accuracy"] == pytest.approx(sum(want_correct) / len(PROMPTS))
        tokens = [g["completion_tokens"] for g in gen[name]]
        assert [r[name]["completion_tokens"] for r in rows] == tokens
        assert m["mean_generated_tokens"] == pytest.approx(sum(tokens) / len(tokens))
        assert m["thinking_share"] == pytest.approx(sum(thinking) / len(thinking))
        assert re.search(rf"^{name} +[0-9.]+% +{sum(want_correct)}/{len(PROMPTS)} ", result.stdout, re.M), \
            result.stdout
    if rule == "exact":  # random texts hold no numbers, boxes or letters reliably; whole answers always exist
        assert by_name["base"]["correct"] >= 2 and by_name["adapter"]["correct"] >= 1
    if rule != "exact":
        return
    # Without --adapter only the base is scored, with the same answers.
    alone_dir = tmp_path / "alone"
    run([qft_bin, "eval", "--generate", eval_set, "--model", model_dir, "--extract", rule, "--output-dir",
         alone_dir, *COMMON])
    alone = json.loads((alone_dir / "summary.json").read_text())
    assert [m["name"] for m in alone["models"]] == ["base"]
    assert alone["models"][0] == by_name["base"]


@pytest.mark.parametrize("line,rule,expected", [
    ('{"prompt": "hi"}', "exact", 'expected "answer"'),
    ('{"prompt": "hi", "answer": "x"', "exact", "not valid JSON"),
    ('{"answer": "x"}', "exact", 'expected "prompt"'),
    ('{"prompt": "hi", "answer": "twelve"}', "last_number", 'expected "answer" to be a number'),
    ('{"prompt": "hi", "answer": "K"}', "choice", "one letter A-J"),
    ('{"prompt": "hi", "answer": [1]}', "exact", "a string or a number"),
    ('{"prompt": 3, "answer": "x"}', "exact", '"prompt" must be a string'),
])
def test_malformed_set_fails_cleanly(tmp_path, qft_bin, models, line, rule, expected):
    model_dir, _ = models
    eval_set = tmp_path / "bad.jsonl"
    fine = '{"prompt": "fine", "answer": "%s"}\n' % ("C" if rule == "choice" else "1")
    eval_set.write_text(fine + "\n" + line + "\n")
    out_dir = tmp_path / "scores"
    result = run([qft_bin, "eval", "--generate", eval_set, "--model", model_dir, "--extract", rule,
                  "--output-dir", out_dir, *COMMON], check=False)
    assert result.returncode != 0
    assert f"{eval_set}:3" in result.stderr and expected in result.stderr, result.stderr
    assert "internal error" not in result.stderr
    assert "new tokens" not in result.stderr  # nothing was generated
    assert not out_dir.exists()


def test_bad_options_fail_cleanly(tmp_path, qft_bin, models):
    model_dir, _ = models
    eval_set = tmp_path / "set.jsonl"
    eval_set.write_text('{"prompt": "hi", "answer": "1"}\n')
    for extra, expected in [(["--extract", "regex"], "--extract 'regex' is not one of"),
                            (["--batch-size", "0"], "--batch-size '0' is not a positive integer"),
                            (["--frobnicate"], "unknown option '--frobnicate'")]:
        result = run([qft_bin, "eval", "--generate", eval_set, "--model", model_dir, *extra], check=False)
        assert result.returncode != 0 and expected in result.stderr, result.stderr
    result = run([qft_bin, "eval", "--generate", tmp_path / "missing.jsonl", "--model", model_dir], check=False)
    assert result.returncode != 0 and "no such file" in result.stderr
    help_text = run([qft_bin, "eval", "--help"]).stdout
    assert "--generate SET.jsonl" in help_text and "last_number" in help_text
