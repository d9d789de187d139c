#!/usr/bin/env python3
"""Tokenizer throughput: Hugging Face `tokenizers` against `qft-tokenize --bench` on the same corpus.

    python3 tests/bench/bench_tokenizer.py [--build build] [--corpus FILE.jsonl] [--threads N]

Not a test (it only measures). Without --corpus it generates the 5 MB reference corpus
(tests/reference/make_tokenizer_corpus.py, seed 1234). HF is timed single-threaded twice:
`encode_batch` with RAYON_NUM_THREADS=1 (set before `tokenizers` is imported, in a child process)
and a plain `encode` loop; then `encode_batch` on N threads. Every figure is the best of three
passes (the first pass also warms the BPE caches, in both implementations).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parents[2]

HF_CHILD = r"""
import json, sys, time
from tokenizers import Tokenizer
path, corpus, mode = sys.argv[1], sys.argv[2], sys.argv[3]
tok = Tokenizer.from_file(path)
docs = [json.loads(line)["text"] for line in open(corpus, encoding="utf-8")]
best, tokens = 1e30, 0
for _ in range(3):
    t0 = time.perf_counter()
    if mode == "loop":
        tokens = sum(len(tok.encode(d).ids) for d in docs)
    else:
        tokens = sum(len(e.ids) for e in tok.encode_batch(docs))
    best = min(best, time.perf_counter() - t0)
print(json.dumps({"seconds": best, "tokens": tokens, "bytes": sum(len(d.encode()) for d in docs)}))
"""


def hf_run(tokenizer_json, corpus, mode, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="true")
    out = subprocess.run([sys.executable, "-c", HF_CHILD, str(tokenizer_json), str(corpus), mode],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def qft_run(binary, tokenizer_json, corpus, threads):
    out = subprocess.run([str(binary), "--tokenizer", str(tokenizer_json), "--input", str(corpus), "--bench",
                          "--threads", str(threads)], check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"(qft encode \(loop\)|qft encode_batch)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            rows[m.group(1)] = (int(m.group(2)), float(m.group(3)))
    tokens = int(re.search(r"([0-9]+) tokens\)", out).group(1))
    return rows, tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=str(SOURCE_DIR / "build"))
    parser.add_argument("--corpus")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    build = Path(args.build)
    tokenizer_json = build / "qwen3-tokenizer" / "tokenizer.json"
    binary = build / "qft-tokenize"
    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus
        if not corpus:
            sys.path.insert(0, str(SOURCE_DIR / "tests" / "reference"))
            from make_tokenizer_corpus import make_corpus
            corpus = Path(tmp) / "corpus.jsonl"
            make_corpus(corpus)
        results = []
        hf_batch1 = hf_run(tokenizer_json, corpus, "batch", 1)
        results.append(("HF encode_batch (RAYON_NUM_THREADS=1)", 1, hf_batch1))
        hf_loop = hf_run(tokenizer_json, corpus, "loop", 1)
        results.append(("HF encode (loop)", 1, hf_loop))
        hf_batchn = hf_run(tokenizer_json, corpus, "batch", args.threads)
        results.append(("HF encode_batch", args.threads, hf_batchn))
        rows, qft_tokens = qft_run(binary, tokenizer_json, corpus, args.threads)
        total_bytes = hf_loop["bytes"]
        for name, (threads, seconds) in rows.items():
            results.append((name, threads, {"seconds": seconds, "tokens": qft_tokens, "bytes": total_bytes}))
    print(f"corpus: {total_bytes / 1e6:.2f} MB, {hf_loop['tokens']} tokens (qft: {qft_tokens})")
    print(f"| {'implementation':40} | threads | seconds |   MB/s | Mtokens/s |")
    print(f"|{'-' * 42}|--------:|--------:|-------:|----------:|")
    for name, threads, r in results:
        print(f"| {name:40} | {threads:7d} | {r['seconds']:7.3f} | {r['bytes'] / 1e6 / r['seconds']:6.2f} "
              f"| {r['tokens'] / 1e6 / r['seconds']:9.3f} |")


if __name__ == "__main__":
    main()
