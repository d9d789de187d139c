// A data file line through the data reader (format detection, the one message parser), the Qwen3 chat
// template and, when QFT_FUZZ_TOKENIZER names a tokenizer.json, tokenizing with target masks.
#include <cstdlib>
#include <memory>

#include "data/dataset_reader.h"
#include "data/tokenize_sample.h"
#include "fuzz_support.h"

namespace {

const qft::text::Tokenizer* tokenizer() {
  static const std::unique_ptr<qft::text::Tokenizer> loaded = []() -> std::unique_ptr<qft::text::Tokenizer> {
    const char* path = std::getenv("QFT_FUZZ_TOKENIZER");
    if (!path || !*path) return nullptr;
    return std::make_unique<qft::text::Tokenizer>(qft::text::Tokenizer::from_file(path));
  }();
  return loaded.get();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qft::fuzz::quiet_logs();
  tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qft::data;
  const std::string_view text = qft::fuzz::as_text(data, size);
  try {
    ProblemLog log(false);
    const DatasetContents contents =
        read_dataset_text("fuzz.jsonl", std::string(text), false, DataFormat::auto_detect, {}, log);
    for (const SourcedSample& s : contents.samples) {
      if (s.sample.kind == Sample::Kind::text) {
        if (tokenizer()) (void)tokenize_text(s.sample.text, *tokenizer());
        continue;
      }
      const auto rendered = qft::text::render_qwen3_chat(s.sample.conversation);
      for (const auto& span : rendered.assistant_spans) {
        if (span.begin > span.end || span.end > rendered.text.size()) __builtin_trap();
      }
      if (!tokenizer()) continue;
      for (const bool thinking : {true, false}) {
        MaskOptions mask;
        mask.enable_thinking = thinking;
        const TokenizedSample sample = tokenize_chat(s.sample.conversation, *tokenizer(), mask);
        if (sample.ids.size() != sample.targets.size()) __builtin_trap();
        if (thinking && sample.ids != tokenizer()->encode(rendered.text)) __builtin_trap();
      }
    }
  } catch (const qft::Error&) {
  }
  return 0;
}
