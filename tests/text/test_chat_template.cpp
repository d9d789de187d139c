// The native Qwen3 template against transformers' apply_chat_template (fixture made by
// tests/reference/make_chat_template_fixture.py), plus the json.dumps writer and the assistant spans.
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/chat_template.h"
#include "text/python_json.h"

namespace qft::text {
namespace {

using Json = nlohmann::ordered_json;

std::vector<Json> load_cases() {
  std::ifstream in(std::string(QFT_SOURCE_DIR) + "/tests/fixtures/chat_template_cases.jsonl");
  std::vector<Json> cases;
  std::string line;
  while (std::getline(in, line)) cases.push_back(Json::parse(line));
  return cases;
}

RenderedChat render_case(const Json& c) {
  TemplateOptions options;
  options.add_generation_prompt = c.at("add_generation_prompt").get<bool>();
  if (c.contains("enable_thinking")) options.enable_thinking = c["enable_thinking"].get<bool>();
  const Json tools = c.contains("tools") ? c["tools"] : Json();
  return render_qwen3_chat(conversation_from_hf_json(c.at("messages"), tools), options);
}

TEST(ChatTemplate, MatchesTransformersOnEveryFixtureCase) {
  const auto cases = load_cases();
  ASSERT_GE(cases.size(), 200u);
  int matched = 0;
  for (const auto& c : cases) {
    const std::string expected = c.at("expected").get<std::string>();
    const std::string rendered = render_case(c).text;
    EXPECT_EQ(rendered, expected) << "case " << c.at("id");
    matched += rendered == expected;
  }
  EXPECT_EQ(matched, static_cast<int>(cases.size()));
}

TEST(ChatTemplate, FixtureCoversTheTemplateFeatures) {
  int with_tools = 0, with_calls = 0, string_args = 0, grouped_tool_results = 0, reasoning_field = 0,
      inline_think = 0, generation_prompt = 0, thinking_off = 0;
  for (const auto& c : load_cases()) {
    with_tools += c.contains("tools");
    generation_prompt += c["add_generation_prompt"].get<bool>();
    thinking_off += c.contains("enable_thinking") && !c["enable_thinking"].get<bool>();
    const auto& messages = c["messages"];
    for (size_t i = 0; i < messages.size(); ++i) {
      const auto& m = messages[i];
      reasoning_field += m.contains("reasoning_content");
      inline_think += m["content"].get<std::string>().find("</think>") != std::string::npos;
      if (m.contains("tool_calls")) {
        ++with_calls;
        for (const auto& call : m["tool_calls"]) {
          const auto& fn = call.contains("function") ? call["function"] : call;
          string_args += fn["arguments"].is_string();
        }
      }
      grouped_tool_results += i > 0 && m["role"] == "tool" && messages[i - 1]["role"] == "tool";
    }
  }
  EXPECT_GT(with_tools, 20);
  EXPECT_GT(with_calls, 20);
  EXPECT_GT(string_args, 5);
  EXPECT_GT(grouped_tool_results, 5);
  EXPECT_GT(reasoning_field, 20);
  EXPECT_GT(inline_think, 20);
  EXPECT_GT(generation_prompt, 20);
  EXPECT_GT(thinking_off, 20);
}

TEST(ChatTemplate, AssistantSpansCoverEachAssistantTurnThroughImEnd) {
  for (const auto& c : load_cases()) {
    const RenderedChat rendered = render_case(c);
    size_t assistants = 0;
    for (const auto& m : c["messages"]) assistants += m["role"] == "assistant";
    ASSERT_EQ(rendered.assistant_spans.size(), assistants) << "case " << c["id"];
    size_t previous_end = 0;
    for (const auto& span : rendered.assistant_spans) {
      ASSERT_LE(previous_end, span.begin);
      ASSERT_LT(span.begin, span.end);
      const std::string header = "<|im_start|>assistant\n";
      ASSERT_GE(span.begin, header.size());
      EXPECT_EQ(rendered.text.substr(span.begin - header.size(), header.size()), header) << "case " << c["id"];
      EXPECT_EQ(rendered.text.substr(span.end - 10, 10), "<|im_end|>") << "case " << c["id"];
      previous_end = span.end;
    }
  }
}

TEST(ChatTemplate, LastAssistantGetsEmptyThinkBlockAndHistoryLosesThinking) {
  Conversation conversation;
  conversation.messages = {{Role::user, "Q1", std::nullopt, {}},
                           {Role::assistant, "<think>\nR1\n</think>\n\nA1", std::nullopt, {}},
                           {Role::user, "Q2", std::nullopt, {}},
                           {Role::assistant, "A2", std::nullopt, {}}};
  const RenderedChat rendered = render_qwen3_chat(conversation);
  EXPECT_EQ(rendered.text,
            "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\n\n</think>\n\nA2<|im_end|>\n");
  ASSERT_EQ(rendered.assistant_spans.size(), 2u);
  EXPECT_EQ(rendered.text.substr(rendered.assistant_spans[0].begin,
                                 rendered.assistant_spans[0].end - rendered.assistant_spans[0].begin),
            "A1<|im_end|>");
  EXPECT_EQ(rendered.text.substr(rendered.assistant_spans[1].begin,
                                 rendered.assistant_spans[1].end - rendered.assistant_spans[1].begin),
            "<think>\n\n</think>\n\nA2<|im_end|>");
}

TEST(ChatTemplate, GenerationPromptWithThinkingOff) {
  Conversation conversation;
  conversation.messages = {{Role::user, "Hi", std::nullopt, {}}};
  TemplateOptions options;
  options.add_generation_prompt = true;
  options.enable_thinking = false;
  EXPECT_EQ(render_qwen3_chat(conversation, options).text,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

TEST(ChatTemplate, RejectsMalformedMessages) {
  EXPECT_THROW(conversation_from_hf_json(Json::parse(R"([{"role": "robot", "content": "x"}])"), Json()), Error);
  EXPECT_THROW(conversation_from_hf_json(Json::parse(R"([{"content": "x"}])"), Json()), Error);
  EXPECT_THROW(conversation_from_hf_json(Json::parse(R"([{"role": "user", "content": 5}])"), Json()), Error);
  EXPECT_THROW(conversation_from_hf_json(
                   Json::parse(R"([{"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}])"),
                   Json()),
               Error);
  EXPECT_THROW(conversation_from_hf_json(Json::parse(R"({"role": "user"})"), Json()), Error);
}

TEST(PythonJson, FloatsFollowPythonRepr) {
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.5), "0.5");
  EXPECT_EQ(python_float_repr(-0.0), "-0.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(python_float_repr(1.5e16), "1.5e+16");
  EXPECT_EQ(python_float_repr(1e-5), "1e-05");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
  EXPECT_EQ(python_float_repr(0.1 + 0.2), "0.30000000000000004");
  EXPECT_EQ(python_float_repr(123456789.125), "123456789.125");
  EXPECT_EQ(python_float_repr(1e22), "1e+22");
  EXPECT_EQ(python_float_repr(-2.5e-300), "-2.5e-300");
}

TEST(PythonJson, SeparatorsEscapesAndKeyOrder) {
  const Json value = Json::parse(R"({"z": [1, 2.0, true, null], "a": {"中": "é\n\"\\\t\u0001\u007f"}, "e": {}, "l": []})");
  EXPECT_EQ(python_json_dumps(value),
            "{\"z\": [1, 2.0, true, null], \"a\": {\"中\": \"é\\n\\\"\\\\\\t\\u0001\x7f\"}, \"e\": {}, \"l\": []}");
  EXPECT_EQ(python_json_dumps(Json(18446744073709551615ull)), "18446744073709551615");
  EXPECT_EQ(python_json_dumps(Json(-7)), "-7");
}

}  // namespace
}  // namespace qft::text
