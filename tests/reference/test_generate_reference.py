"""`qft-dist generate` and `qft-dist chat` against transformers' generate on tiny random models (CPU, fp32).

* greedy: token for token equal to `model.generate(do_sample=False)` for a batch of chat prompts of
  different lengths (qft prefills them as per-row lengths, transformers left-pads), with and without
  thinking, tied and untied embeddings, with a PEFT adapter applied on the fly, and from the directory
  `qft-dist merge` writes;
* the same answers whatever --batch-size;
* chat: a scripted multi-turn session (history, /think off, /reset) prints what transformers generates
  for the same conversation;
* sampling: qft's logits processors equal transformers' (repetition penalty, temperature, top-k, top-p,
  min-p, in transformers' order) on fixed logits; seeded sampling is reproducible, changes with the seed
  and does not depend on the batching.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen3ForCausalLM
from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
from peft import LoraConfig, PeftModel, get_peft_model

from conftest import BUILD_DIR, run

MAX_NEW = 10
CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Explain rotary position embeddings in one sentence, please. 谢谢"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "times 3?"}],
]


@pytest.fixture(scope="module")
def models(tmp_path_factory, qft_bin):
    """tiny (tied) and tiny-untied with the real tokenizer, plus a random PEFT adapter on the untied one."""
    root = tmp_path_factory.mktemp("generate-models")
    dirs = {}
    for preset in ("tiny", "tiny-untied"):
        out = root / preset
        # A wider init than transformers' 0.02 spreads the logits, so greedy choices are not near-ties.
        run([qft_bin, "init-model", "--preset", preset, "--dtype", "fp32", "--initializer-range", "0.2",
             "--seed", "3", "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", out])
        dirs[preset] = out
    torch.manual_seed(0)
    base = Qwen3ForCausalLM.from_pretrained(dirs["tiny-untied"], dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                         "up_proj", "down_proj"],
                     init_lora_weights=False, task_type="CAUSAL_LM")  # random A and B: the adapter matters
    adapter = root / "adapter"
    get_peft_model(base, cfg).save_pretrained(adapter)
    dirs["adapter"] = adapter
    return dirs


def reference_model(model_dir, adapter_dir=None):
    model = Qwen3ForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


def stop_ids(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    eos = json.loads((model_dir / "config.json").read_text())["eos_token_id"]
    return set([eos] if isinstance(eos, int) else eos) | {tok.convert_tokens_to_ids("<|im_end|>")}


def reference_generate(model, tok, conversations, thinking, stops):
    """transformers' greedy answers, each cut after its first stop token (what follows is padding)."""
    tok.padding_side = "left"
    texts = [tok.apply_chat_template(c, add_generation_prompt=True, enable_thinking=thinking, tokenize=False)
             for c in conversations]
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=MAX_NEW, pad_token_id=tok.pad_token_id)
    answers = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        answers.append(row[:cut])
    return answers


def qft_generate(qft_bin, tmp_path, model_dir, lines, *flags, adapter=None, name="answers"):
    prompts = tmp_path / f"{name}-prompts.jsonl"
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / f"{name}.jsonl"
    cmd = [qft_bin, "generate", "--model", model_dir, "--input", prompts, "--output", out, "--device", "cpu",
           "--max-new-tokens", MAX_NEW, *flags]
    if adapter is not None:
        cmd += ["--adapter", adapter]
    run(cmd)
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("thinking", [True, False])
@pytest.mark.parametrize("case", ["tiny", "tiny-untied+adapter"])
def test_greedy_equals_transformers(tmp_path, qft_bin, models, case, thinking):
    model_dir = models[case.split("+")[0]]
    adapter = models["adapter"] if case.endswith("+adapter") else None
    tok = AutoTokenizer.from_pretrained(model_dir)
    want = reference_generate(reference_model(model_dir, adapter), tok, CONVERSATIONS, thinking,
                              stop_ids(model_dir))
    if adapter is not None:
        without = reference_generate(reference_model(model_dir), tok, CONVERSATIONS, thinking, stop_ids(model_dir))
        assert without != want, "the adapter does not change the answers: the test would not test it"
    lines = [{"messages": c} for c in CONVERSATIONS]
    flags = ["--greedy"] + ([] if thinking else ["--no-thinking"])
    got = qft_generate(qft_bin, tmp_path, model_dir, lines, *flags, "--batch-size", "3", adapter=adapter)
    assert [g["token_ids"] for g in got] == want
    for g, w in zip(got, want):
        stopped = w[-1] in stop_ids(model_dir)
        assert g["finish_reason"] == ("stop" if stopped else "length")
        assert g["text"] == tok.decode(w[:-1] if stopped else w)
    if not thinking:
        # One prompt per batch gives the same answers (no padding anywhere).
        alone = qft_generate(qft_bin, tmp_path, model_dir, lines, *flags, "--batch-size", "1", adapter=adapter,
                             name="alone")
        assert [g["token_ids"] for g in alone] == want
    if adapter is not None and thinking:
        # A merged directory (qft-dist merge) answers as the base + adapter does.
        merged = tmp_path / "merged"
        run([qft_bin, "merge", "--base", model_dir, "--adapter", adapter, "--output", merged, "--dtype", "fp32"])
        from_merged = qft_generate(qft_bin, tmp_path, merged, lines, *flags, name="merged")
        assert [g["token_ids"] for g in from_merged] == want


def test_chat_session_equals_transformers(tmp_path, qft_bin, models):
    model_dir = models["tiny"]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = reference_model(model_dir)
    stops = stop_ids(model_dir)

    def answer(conversation, thinking):
        ids = reference_generate(model, tok, [conversation], thinking, stops)[0]
        return tok.decode(ids[:-1] if ids and ids[-1] in stops else ids)

    history = [{"role": "user", "content": "Hello there"}]
    first = answer(history, True)
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "And then?"}]
    second = answer(history, False)
    fresh = answer([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Again"}], False)

    script = "Hello there\n/think off\nAnd then?\n/system Be brief.\nAgain\n"
    result = run([qft_bin, "chat", "--model", model_dir, "--device", "cpu", "--greedy", "--max-new-tokens", MAX_NEW],
                 input=script)
    # stdout is a pipe: thinking is printed plainly, one answer per turn followed by a newline.
    assert result.stdout == first + "\n" + second + "\n" + fresh + "\n"


def reference_processors(logits, input_ids, temperature, top_k, top_p, min_p, penalty):
    """The processors transformers' _get_logits_processor builds for these settings, in its order."""
    scores = logits.clone()
    if penalty != 1.0:
        scores = RepetitionPenaltyLogitsProcessor(penalty)(input_ids, scores)
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(input_ids, scores)
    if top_k != 0:
        scores = TopKLogitsWarper(top_k)(input_ids, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(input_ids, scores)
    if min_p is not None:
        scores = MinPLogitsWarper(min_p)(input_ids, scores)
    return scores


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=10, top_p=0.9, min_p=None, penalty=1.3),
    dict(temperature=1.0, top_k=0, top_p=0.5, min_p=0.05, penalty=1.0),
    dict(temperature=1.5, top_k=50, top_p=1.0, min_p=0.2, penalty=0.8),
    dict(temperature=0.6, top_k=20, top_p=0.95, min_p=0.0, penalty=1.1),  # Qwen3's recommended thinking settings
])
def test_sampler_processors_equal_transformers(tmp_path, probe_bin, settings):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 300, generator=g) * 4
    input_ids = torch.randint(0, 300, (4, 12), generator=g)
    want = reference_processors(logits, input_ids, **settings)
    save_file({"logits": logits, "input_ids": input_ids}, str(tmp_path / "in.safetensors"))
    cmd = [probe_bin, "--sampler", tmp_path / "in.safetensors", "--output", tmp_path / "out.safetensors",
           "--do-sample", "--temperature", settings["temperature"], "--top-k", settings["top_k"],
           "--top-p", settings["top_p"], "--repetition-penalty", settings["penalty"]]
    if settings["min_p"] is not None:
        cmd += ["--min-p", settings["min_p"]]
    run(cmd)
    got = load_file(str(tmp_path / "out.safetensors"))["scores"]
    assert torch.equal(torch.isfinite(got), torch.isfinite(want)), "different tokens were filtered"
    kept = torch.isfinite(want)
    assert kept.sum(-1).min() >= 1 and (~kept).any(), "the settings filter nothing: the test would not test"
    torch.testing.assert_close(got[kept], want[kept], rtol=1e-6, atol=1e-6)


def test_seeded_sampling_is_reproducible_and_independent_of_batching(tmp_path, qft_bin, models):
    model_dir = models["tiny"]
    lines = [{"prompt": p} for p in ("Tell me a story", "Hi", "What is a tensor? Answer briefly.")]

    def sample(seed, batch_size, name):
        got = qft_generate(qft_bin, tmp_path, model_dir, lines, "--do-sample", "--temperature", "1.2",
                           "--top-k", "200", "--seed", str(seed), "--batch-size", str(batch_size), name=name)
        return [g["token_ids"] for g in got]

    first = sample(7, 3, "a")
    assert sample(7, 3, "b") == first
    assert sample(7, 1, "c") == first  # each prompt draws from its own (seed, index) stream
    assert sample(8, 3, "d") != first
    greedy = [g["token_ids"] for g in qft_generate(qft_bin, tmp_path, model_dir, lines, "--greedy", name="g")]
    assert greedy != first, "sampling produced the greedy answers: nothing was sampled"


def test_bad_input_fails_cleanly(tmp_path, qft_bin, models):
    model_dir = models["tiny"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"messages": "not a list"}\n')
    out = tmp_path / "out.jsonl"
    result = run([qft_bin, "generate", "--model", model_dir, "--input", bad, "--output", out, "--device", "cpu"],
                 check=False)
    assert result.returncode != 0 and f"{bad}:2" in result.stderr and "messages" in result.stderr
    assert not out.exists()
    result = run([qft_bin, "generate", "--model", model_dir, "--input", bad, "--top-p", "2", "--device", "cpu"],
                 check=False)
    assert result.returncode != 0 and "top_p" in result.stderr
