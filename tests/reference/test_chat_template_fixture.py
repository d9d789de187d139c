"""The committed chat-template fixture is what the installed transformers renders today: regenerate it
with make_chat_template_fixture.py (same seed, committed tokenizer files) and compare byte for byte.
The C++ side checks itself against the fixture in qft_text_tests (ChatTemplate.*)."""
import sys
from pathlib import Path

from conftest import SOURCE_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_chat_template_fixture  # noqa: E402


def test_fixture_is_reproducible(tmp_path):
    regenerated = tmp_path / "chat_template_cases.jsonl"
    make_chat_template_fixture.main(["--out", str(regenerated)])
    committed = SOURCE_DIR / "tests/fixtures/chat_template_cases.jsonl"
    assert regenerated.read_bytes() == committed.read_bytes()
