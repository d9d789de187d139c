"""qft's tokenizer against Hugging Face `tokenizers` on a 5 MB multilingual corpus.

Every document of the seeded corpus (make_tokenizer_corpus.py) must get exactly the ids of
`tokenizers.Tokenizer.from_file` on the same tokenizer.json, and decoding must give back the NFC
text (with and without special tokens, as `tokenizers` decodes them). Runs `qft-tokenize`
(QFT_TOKENIZE_BIN, else $QFT_BUILD_DIR/qft-tokenize), which needs no libtorch.
"""
import json
import lzma
import sys
import unicodedata
from pathlib import Path

import pytest

from conftest import BUILD_DIR, SOURCE_DIR, binary, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_tokenizer_corpus import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    built = BUILD_DIR / "qwen3-tokenizer" / "tokenizer.json"
    if built.exists():
        return built
    # Not configured through CMake: unpack the committed fixture ourselves.
    path = tmp_path_factory.mktemp("qwen3-tokenizer") / "tokenizer.json"
    path.write_bytes(lzma.decompress((SOURCE_DIR / "tests/fixtures/qwen3-tokenizer/tokenizer.json.xz").read_bytes()))
    return path


@pytest.fixture(scope="module")
def tokenize_bin():
    return binary("QFT_TOKENIZE_BIN", "qft-tokenize")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    documents = make_corpus(path, megabytes=5.0, seed=1234)
    assert path.stat().st_size >= 5_000_000
    return path, documents


@pytest.fixture(scope="module")
def hf_tokenizer(tokenizer_json):
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(tokenizer_json))


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def describe_mismatch(hf, index, text, expected, got):
    first = next((k for k, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    lo = max(0, first - 3)
    return (f"document {index}: first difference at token {first}\n"
            f"  text around it: {text[:200]!r}...\n"
            f"  tokenizers: {[hf.id_to_token(i) for i in expected[lo:first + 5]]}\n"
            f"  qft:        {[hf.id_to_token(i) for i in got[lo:first + 5]]}")


def test_ids_match_hf_tokenizers_on_corpus(tmp_path, corpus, hf_tokenizer, tokenizer_json, tokenize_bin):
    corpus_path, documents = corpus
    expected = [e.ids for e in hf_tokenizer.encode_batch(documents)]
    ids_path = tmp_path / "ids.jsonl"
    run([tokenize_bin, "--tokenizer", tokenizer_json, "--input", corpus_path, "--output", ids_path, "--threads", "2"])
    got = read_jsonl(ids_path)
    assert len(got) == len(documents)
    mismatches = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    total_tokens = sum(map(len, expected))
    print(f"compared {len(documents)} documents, {total_tokens} tokens: {len(mismatches)} mismatching documents")
    assert not mismatches, f"{len(mismatches)} of {len(documents)} documents differ; first: " + describe_mismatch(
        hf_tokenizer, mismatches[0], documents[mismatches[0]], expected[mismatches[0]], got[mismatches[0]])
    # The corpus really exercises what it claims to.
    special_ids = {151644, 151645, 151667, 151668}
    assert special_ids <= {i for ids in expected for i in ids}
    assert sum(1 for d in documents if unicodedata.normalize("NFC", d) != d) > 100


def test_decode_round_trips(tmp_path, corpus, hf_tokenizer, tokenizer_json, tokenize_bin):
    corpus_path, documents = corpus
    ids_path = tmp_path / "ids.jsonl"
    run([tokenize_bin, "--tokenizer", tokenizer_json, "--input", corpus_path, "--output", ids_path])
    ids = read_jsonl(ids_path)
    for skip in (False, True):
        out_path = tmp_path / f"decoded_{skip}.jsonl"
        cmd = [tokenize_bin, "--tokenizer", tokenizer_json, "--input", ids_path, "--output", out_path, "--decode"]
        run(cmd + (["--skip-special-tokens"] if skip else []))
        decoded = [row["text"] for row in read_jsonl(out_path)]
        assert len(decoded) == len(documents)
        for i, (text, doc_ids) in enumerate(zip(decoded, ids)):
            assert text == hf_tokenizer.decode(doc_ids, skip_special_tokens=skip), f"document {i} (skip={skip})"
            if not skip:
                assert text == unicodedata.normalize("NFC", documents[i]), f"document {i} does not round-trip"


def test_bad_input_is_reported_with_file_and_line(tmp_path, tokenizer_json, tokenize_bin):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "fine"}\n{"text": "broken \xff utf-8"}\n')
    result = run([tokenize_bin, "--tokenizer", tokenizer_json, "--input", bad, "--output", tmp_path / "out"],
                 check=False)
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr


def test_nfc_heavy_strings_match_hf(tmp_path, hf_tokenizer, tokenizer_json, tokenize_bin):
    """Dense random mixtures of combining marks, jamo, singletons and exclusions: ids and the
    normalised text (decode of the ids) must equal what `tokenizers` produces."""
    import random
    rng = random.Random(11)
    pool = [chr(c) for c in [*range(0x41, 0x7B), *range(0x300, 0x370), *range(0x1100, 0x1200), *range(0xAC00, 0xAC40),
                             0x212B, 0x2126, 0x958, 0x915, 0x93C, 0x9C7, 0x9BE, 0xF73, 0xF71, 0xF72, 0x344, 0x1ACE,
                             0x8D4, 0x334, 0x305, 0x316, 0x3099, 0x304B, 0x1E0B, 0x323, 0xE9, 0xC5, 0x20, 0x11935,
                             0x11930, 0x1DF6]]
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 60))) for _ in range(20000)]
    corpus = tmp_path / "nfc.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    ids_path, decoded_path = tmp_path / "ids.jsonl", tmp_path / "decoded.jsonl"
    run([tokenize_bin, "--tokenizer", tokenizer_json, "--input", corpus, "--output", ids_path])
    run([tokenize_bin, "--tokenizer", tokenizer_json, "--input", ids_path, "--output", decoded_path, "--decode"])
    got_ids = read_jsonl(ids_path)
    decoded = [row["text"] for row in read_jsonl(decoded_path)]
    expected = hf_tokenizer.encode_batch(texts)
    normalizer = hf_tokenizer.normalizer
    for i, text in enumerate(texts):
        assert got_ids[i] == expected[i].ids, f"string {i}: {[hex(ord(c)) for c in text]}"
        assert decoded[i] == normalizer.normalize_str(text), f"string {i}: {[hex(ord(c)) for c in text]}"
