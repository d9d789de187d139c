// Target masks: which bytes of a rendered conversation are targets, which tokens that makes, truncation,
// and the whole render -> tokenize path against the ids HF tokenizers gives for the template fixture.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "data/template_command.h"
#include "data/tokenize_sample.h"
#include "../text/test_support.h"

namespace qft::data {
namespace {

using Json = nlohmann::ordered_json;
using text::Role;

text::Conversation two_turns() {
  text::Conversation c;
  c.messages = {{Role::system, "S", std::nullopt, {}},
                {Role::user, "Q1", std::nullopt, {}},
                {Role::assistant, "<think>\nR1\n</think>\n\nA1", std::nullopt, {}},
                {Role::user, "Q2", std::nullopt, {}},
                {Role::assistant, "A2", std::nullopt, {}}};
  return c;
}

std::string join_ranges(const text::RenderedChat& rendered, const std::vector<ByteRange>& ranges) {
  std::string out;
  for (const auto& r : ranges) out += "[" + rendered.text.substr(r.begin, r.end - r.begin) + "]";
  return out;
}

TEST(TargetRanges, DefaultIsEveryAssistantTurnThroughImEnd) {
  const auto rendered = text::render_qwen3_chat(two_turns());
  EXPECT_EQ(join_ranges(rendered, target_byte_ranges(rendered, {})),
            "[A1<|im_end|>][<think>\n\n</think>\n\nA2<|im_end|>]");
}

TEST(TargetRanges, MaskHistoryKeepsOnlyTheLastAssistantTurn) {
  const auto rendered = text::render_qwen3_chat(two_turns());
  MaskOptions options;
  options.mask_history = true;
  EXPECT_EQ(join_ranges(rendered, target_byte_ranges(rendered, options)), "[<think>\n\n</think>\n\nA2<|im_end|>]");
}

TEST(TargetRanges, ThinkingOffMakesTheEmptyThinkBlockContext) {
  const auto rendered = text::render_qwen3_chat(two_turns());
  MaskOptions options;
  options.enable_thinking = false;
  EXPECT_EQ(join_ranges(rendered, target_byte_ranges(rendered, options)), "[A1<|im_end|>][A2<|im_end|>]");
}

TEST(WithoutReasoning, RemovesReasoningFieldsAndInlineThinking) {
  text::Conversation c = two_turns();
  c.messages[4].reasoning_content = "R2";
  const auto stripped = without_reasoning(c);
  EXPECT_EQ(stripped.messages[2].content, "A1");
  EXPECT_EQ(stripped.messages[4].content, "A2");
  const auto rendered = text::render_qwen3_chat(stripped);
  EXPECT_EQ(rendered.text.find("R1"), std::string::npos);
  EXPECT_EQ(rendered.text.find("R2"), std::string::npos);
  EXPECT_NE(rendered.text.find("<think>\n\n</think>\n\nA2"), std::string::npos);
}

TEST(TokenizeChat, ThinkingOffTrainsOnTheAnswerOnly) {
  const auto& tokenizer = test::qwen3_tokenizer();
  text::Conversation c = two_turns();
  c.messages[4].reasoning_content = "R2";
  MaskOptions options;
  options.enable_thinking = false;
  const TokenizedSample sample = tokenize_chat(c, tokenizer, options);
  std::vector<int32_t> targets;
  for (size_t i = 0; i < sample.ids.size(); ++i) {
    if (sample.targets[i]) targets.push_back(sample.ids[i]);
  }
  EXPECT_EQ(tokenizer.decode(targets), "A1<|im_end|>A2<|im_end|>");
}

TEST(TargetRanges, TurnsMarkedNotTrainableAreContext) {
  text::Conversation c = two_turns();
  c.messages[2].trainable = false;
  const auto rendered = text::render_qwen3_chat(c);
  EXPECT_EQ(join_ranges(rendered, target_byte_ranges(rendered, {})), "[<think>\n\n</think>\n\nA2<|im_end|>]");
  c.messages[4].trainable = false;
  MaskOptions last_only;
  last_only.mask_history = true;
  const auto rendered_last = text::render_qwen3_chat(c);
  EXPECT_TRUE(target_byte_ranges(rendered_last, last_only).empty());
}

TEST(TargetRanges, TrainOnPromptTargetsEverything) {
  const auto rendered = text::render_qwen3_chat(two_turns());
  MaskOptions options;
  options.train_on_prompt = true;
  EXPECT_EQ(join_ranges(rendered, target_byte_ranges(rendered, options)), "[" + rendered.text + "]");
}

TEST(TargetsFromOffsets, TokenIsTargetWhenItsFirstByteIsInARange) {
  const std::vector<uint32_t> offsets = {0, 3, 5, 8, 10, 12};
  const std::vector<ByteRange> ranges = {{4, 9}, {12, 13}};
  EXPECT_EQ(targets_from_offsets(offsets, ranges), (std::vector<uint8_t>{0, 0, 1, 1, 0, 1}));
}

TEST(FitToLength, ShortSampleFits) {
  TokenizedSample s{{1, 2, 3}, {0, 1, 1}};
  EXPECT_EQ(fit_to_length(s, 3, Truncation::truncate_prompt), FitResult::fits);
  EXPECT_EQ(s.ids.size(), 3u);
}

TEST(FitToLength, TruncatePromptCutsTheOldestContextFirst) {
  TokenizedSample s{{1, 2, 3, 4, 5, 6, 7}, {0, 1, 0, 0, 1, 1, 1}};
  EXPECT_EQ(fit_to_length(s, 5, Truncation::truncate_prompt), FitResult::truncated);
  EXPECT_EQ(s.ids, (std::vector<int32_t>{3, 4, 5, 6, 7}));
  EXPECT_EQ(s.targets, (std::vector<uint8_t>{0, 0, 1, 1, 1}));
}

TEST(FitToLength, TruncatePromptThenCutsTheEndOfTheLastAnswer) {
  TokenizedSample s{{1, 2, 3, 4, 5, 6, 7}, {0, 0, 0, 1, 1, 1, 1}};
  EXPECT_EQ(fit_to_length(s, 2, Truncation::truncate_prompt), FitResult::truncated);
  EXPECT_EQ(s.ids, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(s.targets, (std::vector<uint8_t>{1, 1}));
}

TEST(FitToLength, DropRejectsLongSamplesAndNoTargetsIsReported) {
  TokenizedSample long_sample{{1, 2, 3}, {0, 1, 1}};
  EXPECT_EQ(fit_to_length(long_sample, 2, Truncation::drop), FitResult::too_long);
  TokenizedSample no_targets{{1, 2}, {0, 0}};
  EXPECT_EQ(fit_to_length(no_targets, 4, Truncation::truncate_prompt), FitResult::no_targets);
}

TEST(SplitIntoChunks, ConsecutivePiecesOfAtMostTheLimit) {
  const TokenizedSample s{{1, 2, 3, 4, 5}, {1, 1, 1, 1, 1}};
  const auto chunks = split_into_chunks(s, 2);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[2].ids, (std::vector<int32_t>{5}));
}

// Rendering + one tokenization reproduces HF's ids, and the target tokens decode to the assistant turns.
TEST(TokenizeChat, IdsMatchHuggingFaceOnTheTemplateFixture) {
  const auto& tokenizer = test::qwen3_tokenizer();
  std::ifstream in(std::string(QFT_SOURCE_DIR) + "/tests/fixtures/chat_template_cases.jsonl");
  std::string line;
  int checked = 0;
  while (std::getline(in, line)) {
    const Json c = Json::parse(line);
    if (!c.contains("expected_ids") || c["add_generation_prompt"].get<bool>()) continue;
    const auto conversation = text::conversation_from_hf_json(c["messages"], c.contains("tools") ? c["tools"] : Json());
    const TokenizedSample sample = tokenize_chat(conversation, tokenizer, {});
    const auto expected = c["expected_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(sample.ids, expected) << "case " << c["id"];

    // Per assistant turn: the target tokens decode to the turn's text, except that a token may start
    // before the turn when its leading newlines merge with the header's "\n" (then it is context).
    const auto rendered = text::render_qwen3_chat(conversation);
    const auto encoding = tokenizer.encode_with_offsets(rendered.text);
    for (const auto& span : rendered.assistant_spans) {
      std::vector<int32_t> span_targets;
      for (size_t i = 0; i < sample.ids.size(); ++i) {
        if (sample.targets[i] && encoding.offsets[i] >= span.begin && encoding.offsets[i] < span.end)
          span_targets.push_back(sample.ids[i]);
      }
      const std::string span_text = rendered.text.substr(span.begin, span.end - span.begin);
      const std::string decoded = tokenizer.decode(span_targets);
      ASSERT_LE(decoded.size(), span_text.size()) << "case " << c["id"];
      EXPECT_EQ(span_text.substr(span_text.size() - decoded.size()), decoded) << "case " << c["id"];
      const std::string lost = span_text.substr(0, span_text.size() - decoded.size());
      EXPECT_EQ(lost.find_first_not_of(" \n"), std::string::npos) << "case " << c["id"] << " lost '" << lost << "'";
    }
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(TokenizeChat, LastTokenOfEachAssistantTurnIsImEndAndATarget) {
  const auto& tokenizer = test::qwen3_tokenizer();
  const TokenizedSample sample = tokenize_chat(two_turns(), tokenizer, {});
  const int32_t im_end = tokenizer.token_to_id("<|im_end|>");
  const int32_t im_start = tokenizer.token_to_id("<|im_start|>");
  int im_end_targets = 0;
  for (size_t i = 0; i < sample.ids.size(); ++i) {
    if (sample.ids[i] == im_end && sample.targets[i]) ++im_end_targets;
    if (sample.ids[i] == im_start) EXPECT_EQ(sample.targets[i], 0);
  }
  EXPECT_EQ(im_end_targets, 2);  // the two assistant turns, not the system/user ones
}

TEST(TokenizeText, EveryTokenIsATargetAndEndOfTextCloses) {
  const auto& tokenizer = test::qwen3_tokenizer();
  const TokenizedSample sample = tokenize_text("Hello world", tokenizer);
  EXPECT_EQ(sample.ids.back(), tokenizer.token_to_id("<|endoftext|>"));
  EXPECT_EQ(std::count(sample.targets.begin(), sample.targets.end(), 1), static_cast<long>(sample.ids.size()));
}

TEST(TokenizeChat, NormalisesOnlyBetweenSpecialTokensAsTokenizersDoes) {
  // A combining mark right after "<think>" / "<|im_end|>" must not compose with the token's last
  // character: normalising whole strings before rendering (or before splitting special tokens) would.
  const auto& tokenizer = test::qwen3_tokenizer();
  text::Conversation c;
  c.messages.push_back({Role::user, "<think>\xCC\x81 cafe\xCC\x81", std::nullopt, {}});
  c.messages.push_back({Role::assistant, "ok<|im_end|>\xCC\x81" "e\xCC\x81", std::nullopt, {}});
  const TokenizedSample sample = tokenize_chat(c, tokenizer, {});
  const auto rendered = text::render_qwen3_chat(c);
  EXPECT_EQ(sample.ids, tokenizer.encode(rendered.text));
  // The target span still starts right after "assistant\n" and ends with the closing <|im_end|>.
  const auto encoding = tokenizer.encode_with_offsets(rendered.text);
  size_t first_target = sample.ids.size();
  for (size_t i = 0; i < sample.ids.size(); ++i) {
    if (sample.targets[i]) {
      first_target = i;
      break;
    }
  }
  ASSERT_LT(first_target, sample.ids.size());
  EXPECT_EQ(encoding.offsets[first_target], rendered.assistant_spans[0].begin);
}

TEST(TokenizeChat, KeysEqualOnlyAfterNfcStayDistinct) {
  // {"\u00e9": 1, "e\u0301": 2}: two keys for Python (and transformers), one after whole-value NFC.
  const auto& tokenizer = test::qwen3_tokenizer();
  text::Conversation c;
  c.messages.push_back({Role::user, "hi", std::nullopt, {}});
  text::ChatMessage call{Role::assistant, "", std::nullopt, {}};
  Json arguments = Json::object();
  arguments["\xC3\xA9"] = 1;
  arguments["e\xCC\x81"] = 2;
  call.tool_calls.push_back({"f", arguments});
  c.messages.push_back(call);
  const auto rendered = text::render_qwen3_chat(c);
  EXPECT_NE(rendered.text.find("{\"\xC3\xA9\": 1, \"e\xCC\x81\": 2}"), std::string::npos);
  EXPECT_EQ(tokenize_chat(c, tokenizer, {}).ids, tokenizer.encode(rendered.text));
}

TEST(TemplateCommand, MarkTargetsWrapsEachRunOfTargetTokens) {
  EXPECT_EQ(mark_targets("abcdef", {0, 2, 3, 5}, {0, 1, 1, 0}, "[", "]"), "ab[cde]f");
  EXPECT_EQ(mark_targets("abcdef", {0, 2, 3, 5}, {1, 0, 0, 1}, "[", "]"), "[ab]cde[f]");
  EXPECT_EQ(mark_targets("", {}, {}, "[", "]"), "");
}

TEST(TemplateCommand, ShowsTheRenderedRecordWithTargetsAndTokenCount) {
  const auto& tokenizer = test::qwen3_tokenizer();
  const std::string dir = test::scratch_dir();
  const std::string path = dir + "/data.jsonl";
  std::ofstream(path) << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})"
                      << "\n\n"
                      << R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}, {"role": "assistant", "content": "y"}]})"
                      << "\n"
                      << R"({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>r</think>A"}]})"
                      << "\n";
  TemplateRequest request;
  request.data_path = path;
  const std::string first = template_view(request, tokenizer);
  EXPECT_EQ(first, path + ":1: openai record, rendered with the Qwen3 template; target tokens are between \xC2\xAB and \xC2\xBB\n"
                   "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n\xC2\xAB<think>\n\n</think>\n\nHello<|im_end|>\xC2\xBB\n"
                   "-- 16 tokens, 6 targets (enable_thinking: true, mask_history: false, train_on_prompt: false)\n");
  // The token count is that of prepare: the ids of the rendered text.
  const auto rendered = std::string("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nHello<|im_end|>\n");
  EXPECT_EQ(tokenizer.encode(rendered).size(), 16u);
  // A refused record: the reason prepare would skip it for, at its line (blank lines are not records).
  request.index = 1;
  EXPECT_NE(test::error_of([&] { template_view(request, tokenizer); })
                .find(path + ":3: message 0: 'content' of a user message must be a string, got a list"),
            std::string::npos);
  request.index = 2;
  request.mask.enable_thinking = false;
  const std::string third = template_view(request, tokenizer);
  EXPECT_NE(third.find("<|im_start|>assistant\n<think>\n\n</think>\n\n\xC2\xAB" "A<|im_end|>\xC2\xBB"), std::string::npos) << third;
  request.index = 3;
  EXPECT_NE(test::error_of([&] { template_view(request, tokenizer); }).find("--index 3 but the file has 3 records"),
            std::string::npos);
}

}  // namespace
}  // namespace qft::data
