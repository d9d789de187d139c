// Chat sample -> token ids + target mask. The conversation is rendered to ONE string and tokenized once
// (tokenizing turns separately would not reproduce HF's ids at turn boundaries); the tokenizer applies NFC
// itself, between added tokens, exactly where `tokenizers` does. A token is a target when its first byte lies in a target byte range of the rendered text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/conversation.h"
#include "data/data_config.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace qft::data {

struct TokenizedSample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> targets;  // 1 = trained on (the label is the id itself), 0 = context only
};

struct MaskOptions {
  bool train_on_prompt = false;  // every token is a target
  bool mask_history = false;     // only the last assistant turn is a target
  // false (train for non-thinking mode, as LLaMA-Factory does): reasoning is removed from every
  // assistant turn, and the empty "<think>\n\n</think>\n\n" the template then writes is context, not
  // target, because the generation prompt pre-fills it when thinking is off.
  bool enable_thinking = true;
};

struct ByteRange {
  size_t begin = 0;
  size_t end = 0;
};

// Target byte ranges of a rendered conversation under `options` (assistant turns marked not trainable
// are skipped; mask_history looks only at the last assistant turn).
std::vector<ByteRange> target_byte_ranges(const text::RenderedChat& rendered, const MaskOptions& options);

// Token i is a target when offsets[i] lies in one of `ranges` (sorted, disjoint).
std::vector<uint8_t> targets_from_offsets(const std::vector<uint32_t>& offsets, const std::vector<ByteRange>& ranges);

// The conversation without reasoning: reasoning_content dropped and inline "<think>…</think>" removed
// from assistant contents (the answer after the last "</think>" is kept, as the template keeps it).
text::Conversation without_reasoning(const text::Conversation& conversation);

TokenizedSample tokenize_chat(const text::Conversation& conversation, const text::Tokenizer& tokenizer,
                              const MaskOptions& options);

// Raw text for continued pre-training: every token is a target and "<|endoftext|>" closes the document.
TokenizedSample tokenize_text(const std::string& text, const text::Tokenizer& tokenizer);

enum class FitResult { fits, truncated, too_long, no_targets };

// Brings a sample to at most `max_length` tokens. truncate_prompt: removes the oldest tokens first, but
// never past the start of the last target run; if that is not enough, cuts the end of the last answer.
// drop: too_long for any sample over the limit. no_targets when no target token is left.
FitResult fit_to_length(TokenizedSample& sample, int64_t max_length, Truncation truncation);

// A long pre-training text as consecutive pieces of at most `max_length` tokens.
std::vector<TokenizedSample> split_into_chunks(const TokenizedSample& sample, int64_t max_length);

}  // namespace qft::data
