#include "data/tokenize_sample.h"

#include <algorithm>
#include <string_view>

#include "core/error.h"

namespace qft::data {

using text::Tokenizer;

namespace {

constexpr std::string_view kEmptyThink = "<think>\n\n</think>\n\n";

}  // namespace

std::vector<ByteRange> target_byte_ranges(const text::RenderedChat& rendered, const MaskOptions& options) {
  if (options.train_on_prompt) return {ByteRange{0, rendered.text.size()}};
  std::vector<ByteRange> ranges;
  const auto& spans = rendered.assistant_spans;
  const size_t first = options.mask_history && !spans.empty() ? spans.size() - 1 : 0;
  for (size_t i = first; i < spans.size(); ++i) {
    if (!spans[i].trainable) continue;
    ByteRange range{spans[i].begin, spans[i].end};
    if (!options.enable_thinking &&
        std::string_view(rendered.text).substr(range.begin, kEmptyThink.size()) == kEmptyThink) {
      range.begin += kEmptyThink.size();
    }
    ranges.push_back(range);
  }
  return ranges;
}

std::vector<uint8_t> targets_from_offsets(const std::vector<uint32_t>& offsets, const std::vector<ByteRange>& ranges) {
  std::vector<uint8_t> targets(offsets.size(), 0);
  size_t r = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    QFT_CHECK(i == 0 || offsets[i] >= offsets[i - 1], "token offsets must not decrease (token {})", i);
    while (r < ranges.size() && ranges[r].end <= offsets[i]) ++r;
    targets[i] = r < ranges.size() && ranges[r].begin <= offsets[i] ? 1 : 0;
  }
  return targets;
}

text::Conversation without_reasoning(const text::Conversation& conversation) {
  text::Conversation out = conversation;
  for (auto& message : out.messages) {
    if (message.role != text::Role::assistant) continue;
    const size_t close = message.content.rfind("</think>");
    if (!message.reasoning_content && close != std::string::npos) {
      const size_t answer = message.content.find_first_not_of('\n', close + std::string_view("</think>").size());
      message.content = answer == std::string::npos ? "" : message.content.substr(answer);
    }
    message.reasoning_content = "";
  }
  return out;
}

TokenizedSample tokenize_chat(const text::Conversation& conversation, const Tokenizer& tokenizer,
                              const MaskOptions& options) {
  // Two calls rather than one on `cond ? conversation : without_reasoning(...)`, whose prvalue result
  // would copy the whole conversation even when thinking is kept.
  // No normalisation here: the tokenizer applies NFC itself, between added tokens, as `tokenizers` does
  // on the text apply_chat_template rendered; token offsets point into `rendered.text` as it is.
  const text::RenderedChat rendered =
      text::render_qwen3_chat(options.enable_thinking ? conversation : without_reasoning(conversation));
  text::Encoding encoding = tokenizer.encode_with_offsets(rendered.text);
  QFT_CHECK(encoding.ids.size() == encoding.offsets.size(), "tokenizer returned {} ids but {} offsets",
            encoding.ids.size(), encoding.offsets.size());
  TokenizedSample sample;
  sample.targets = targets_from_offsets(encoding.offsets, target_byte_ranges(rendered, options));
  sample.ids = std::move(encoding.ids);
  return sample;
}

TokenizedSample tokenize_text(const std::string& text, const Tokenizer& tokenizer) {
  TokenizedSample sample;
  sample.ids = tokenizer.encode(text);
  const int32_t end_of_text = tokenizer.token_to_id("<|endoftext|>");
  QFT_CHECK(end_of_text >= 0, "the tokenizer has no <|endoftext|> token to close pre-training documents");
  sample.ids.push_back(end_of_text);
  sample.targets.assign(sample.ids.size(), 1);
  return sample;
}

FitResult fit_to_length(TokenizedSample& sample, int64_t max_length, Truncation truncation) {
  const auto has_target = [&] { return std::find(sample.targets.begin(), sample.targets.end(), 1) != sample.targets.end(); };
  const size_t length = sample.ids.size();
  const size_t limit = static_cast<size_t>(max_length);
  if (length <= limit) return has_target() ? FitResult::fits : FitResult::no_targets;
  if (truncation == Truncation::drop) return FitResult::too_long;

  // Start of the last run of targets: everything before it is context the answer can do without.
  size_t last_run_begin = length;
  for (size_t i = length; i-- > 0;) {
    if (sample.targets[i]) {
      last_run_begin = i;
    } else if (last_run_begin != length) {
      break;
    }
  }
  if (last_run_begin == length) return FitResult::no_targets;
  const size_t left_cut = std::min(length - limit, last_run_begin);
  sample.ids.erase(sample.ids.begin(), sample.ids.begin() + static_cast<std::ptrdiff_t>(left_cut));
  sample.targets.erase(sample.targets.begin(), sample.targets.begin() + static_cast<std::ptrdiff_t>(left_cut));
  if (sample.ids.size() > limit) {
    sample.ids.resize(limit);
    sample.targets.resize(limit);
  }
  return has_target() ? FitResult::truncated : FitResult::no_targets;
}

std::vector<TokenizedSample> split_into_chunks(const TokenizedSample& sample, int64_t max_length) {
  std::vector<TokenizedSample> chunks;
  const size_t limit = static_cast<size_t>(max_length);
  for (size_t begin = 0; begin < sample.ids.size(); begin += limit) {
    const size_t end = std::min(sample.ids.size(), begin + limit);
    TokenizedSample chunk;
    chunk.ids.assign(sample.ids.begin() + static_cast<std::ptrdiff_t>(begin), sample.ids.begin() + static_cast<std::ptrdiff_t>(end));
    chunk.targets.assign(sample.targets.begin() + static_cast<std::ptrdiff_t>(begin), sample.targets.begin() + static_cast<std::ptrdiff_t>(end));
    chunks.push_back(std::move(chunk));
  }
  return chunks;
}

}  // namespace qft::data
