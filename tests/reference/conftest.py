"""Shared helpers for the reference tests: qft's binaries against transformers + peft on the same weights.

The binaries come from the environment the `reference` ctest sets (QFT_BIN, QFT_PROBE_BIN, ...); run by
hand with QFT_BUILD_DIR=build python3 -m pytest tests/reference.
"""
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE_DIR = Path(os.environ.get("QFT_SOURCE_DIR", Path(__file__).resolve().parents[2]))
BUILD_DIR = Path(os.environ.get("QFT_BUILD_DIR", SOURCE_DIR / "build"))


def binary(env_name: str, default_name: str) -> str:
    path = os.environ.get(env_name) or str(BUILD_DIR / default_name)
    if not Path(path).exists():
        pytest.fail(f"{path} does not exist: build the project first (make build) or set {env_name}")
    return path


def run(cmd, check=True, **kwargs):
    """Runs a command, returning CompletedProcess; on failure the output is part of the assertion."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(map(str, cmd))}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}")
    return result


@pytest.fixture(scope="session")
def qft_bin():
    return binary("QFT_BIN", "qft-dist")


@pytest.fixture(scope="session")
def probe_bin():
    return binary("QFT_PROBE_BIN", "qft-probe")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, qft_bin):
    """A random tiny Qwen3 (fp32, seed 0) with the real tokenizer, written once per test module."""
    model_dir = tmp_path_factory.mktemp("tiny") / "model"
    run([qft_bin, "init-model", "--preset", "tiny", "--dtype", "fp32", "--seed", "0",
         "--tokenizer", BUILD_DIR / "qwen3-tokenizer", "--output", model_dir])
    return model_dir


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """The real Qwen3 tokenizer (the committed fixture), unpacked for transformers and tokenizers."""
    directory = tmp_path_factory.mktemp("qwen3-tokenizer")
    packed = SOURCE_DIR / "tests/fixtures/qwen3-tokenizer/tokenizer.json.xz"
    (directory / "tokenizer.json").write_bytes(lzma.decompress(packed.read_bytes()))
    shutil.copy(SOURCE_DIR / "tests/fixtures/qwen3-tokenizer/tokenizer_config.json", directory)
    return directory


@pytest.fixture(scope="module")
def hf(tokenizer_dir):
    """(transformers tokenizer, tokenizers Tokenizer) of tokenizer_dir."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(tokenizer_dir)), Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
