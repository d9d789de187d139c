// Data set formats, auto-detection, column mapping, and every kind of bad input in strict and lenient mode.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/dataset_reader.h"
#include "../text/test_support.h"

namespace qft::data {
namespace {

using Json = nlohmann::ordered_json;
using text::Role;

DatasetContents read_lenient(const std::string& text, ProblemLog& log, DataFormat format = DataFormat::auto_detect,
                             ColumnMap columns = {}, bool json_list = false) {
  return read_dataset_text("data.jsonl", text, json_list, format, std::move(columns), log);
}

std::string strict_error(const std::string& text, DataFormat format = DataFormat::auto_detect, bool json_list = false) {
  ProblemLog log(true);
  return test::error_of([&] { read_dataset_text("data.jsonl", text, json_list, format, {}, log); });
}

TEST(Formats, AlpacaWithSystemHistoryAndInput) {
  ProblemLog log(false);
  const auto contents = read_lenient(
      R"({"instruction": "Translate", "input": "hello", "output": "你好", "system": "S", "history": [["q0", "a0"]]})", log);
  ASSERT_EQ(contents.samples.size(), 1u);
  EXPECT_EQ(contents.format, DataFormat::alpaca);
  const auto& m = contents.samples[0].sample.conversation.messages;
  ASSERT_EQ(m.size(), 5u);
  EXPECT_EQ(m[0].role, Role::system);
  EXPECT_EQ(m[1].content, "q0");
  EXPECT_EQ(m[2].content, "a0");
  EXPECT_EQ(m[3].content, "Translate\nhello");
  EXPECT_EQ(m[4].role, Role::assistant);
  EXPECT_EQ(m[4].content, "你好");
}

TEST(Formats, ShareGptRolesFunctionCallsAndTools) {
  ProblemLog log(false);
  const auto contents = read_lenient(
      R"({"conversations": [{"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{\"name\": \"w\", \"arguments\": {\"c\": 1}}"}, {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}], "system": "S", "tools": "[{\"name\": \"w\"}]"})",
      log);
  ASSERT_EQ(contents.samples.size(), 1u) << log.summary();
  EXPECT_EQ(contents.format, DataFormat::sharegpt);
  const auto& c = contents.samples[0].sample.conversation;
  ASSERT_EQ(c.messages.size(), 5u);
  EXPECT_EQ(c.messages[2].role, Role::assistant);
  ASSERT_EQ(c.messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(c.messages[2].tool_calls[0].name, "w");
  EXPECT_EQ(c.messages[3].role, Role::tool);
  EXPECT_EQ(c.tools, Json::parse(R"([{"name": "w"}])"));
}

TEST(Formats, OpenAiMessagesWithToolCallsAndReasoning) {
  ProblemLog log(false);
  const auto contents = read_lenient(
      R"({"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": null, "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "done", "reasoning_content": "think"}], "tools": [{"type": "function", "function": {"name": "f"}}]})",
      log);
  ASSERT_EQ(contents.samples.size(), 1u) << log.summary();
  EXPECT_EQ(contents.format, DataFormat::openai);
  const auto& m = contents.samples[0].sample.conversation.messages;
  EXPECT_EQ(m[0].content, "ab");
  EXPECT_EQ(m[1].content, "");
  EXPECT_EQ(m[1].tool_calls[0].arguments, "{\"x\": 1}");
  EXPECT_EQ(m[3].reasoning_content.value_or(""), "think");
}

TEST(Formats, NonStringContentIsRenderedAsTheTemplateDoesOrRefusedWhereTransformersFails) {
  // transformers: a list/dict/number content of a tool message is printed with Python's str(); in any
  // other role the template concatenates it to text and raises. Roles it drops silently are refused.
  ProblemLog log(false);
  const auto contents = read_lenient(
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}, {"role": "tool", "content": [{"type": "text", "text": "it's \"x\"\u200b"}]}, {"role": "tool", "content": {"n": 123456789012345678901234567890, "f": 1e400, "b": true, "z": null}}, {"role": "tool", "content": 7}, {"role": "tool"}, {"role": "assistant", "content": "d"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": "x"}]})"
      "\n"
      R"({"messages": [{"role": "developer", "content": "d"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"a": 1}}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"function": {}, "name": 5, "arguments": {"k": 1}}]}]})",
      log);
  ASSERT_EQ(contents.samples.size(), 2u) << log.summary();
  const auto& m = contents.samples[0].sample.conversation.messages;
  EXPECT_EQ(m[2].content, "[{'type': 'text', 'text': 'it\\'s \"x\"\\u200b'}]");
  EXPECT_EQ(m[3].content, "{'n': 123456789012345678901234567890, 'f': inf, 'b': True, 'z': None}");
  EXPECT_EQ(m[4].content, "7");
  EXPECT_EQ(m[5].content, "");
  // An empty "function" wrapper is ignored (Jinja: `if tool_call.function` is false); the name is str(5).
  const auto& call = contents.samples[1].sample.conversation.messages[1].tool_calls.at(0);
  EXPECT_EQ(call.name, "5");
  EXPECT_EQ(call.arguments, Json::parse(R"({"k": 1})"));
  EXPECT_EQ(log.count(Problem::wrong_type), 2);
  EXPECT_EQ(log.count(Problem::unknown_role), 1);
  EXPECT_NE(log.summary().find("data.jsonl:2"), std::string::npos);
}

TEST(Formats, OpenAiWeightZeroMarksATurnAsContext) {
  ProblemLog log(false);
  const auto contents = read_lenient(
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}, {"role": "user", "content": "q2"}, {"role": "assistant", "content": "b", "weight": 1}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]})",
      log);
  ASSERT_EQ(contents.samples.size(), 1u);
  EXPECT_FALSE(contents.samples[0].sample.conversation.messages[1].trainable);
  EXPECT_TRUE(contents.samples[0].sample.conversation.messages[3].trainable);
  EXPECT_EQ(log.count(Problem::wrong_type), 1);
}

TEST(Formats, RawText) {
  ProblemLog log(false);
  const auto contents = read_lenient("{\"text\": \"plain document\"}\n", log);
  ASSERT_EQ(contents.samples.size(), 1u);
  EXPECT_EQ(contents.samples[0].sample.kind, Sample::Kind::text);
  EXPECT_EQ(contents.samples[0].sample.text, "plain document");
}

TEST(Formats, ConversationsListWithRoleContentIsOpenAiStyle) {
  ProblemLog log(false);
  const auto contents =
      read_lenient(R"({"conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})", log);
  ASSERT_EQ(contents.samples.size(), 1u) << log.summary();
  EXPECT_EQ(contents.format, DataFormat::openai);
}

TEST(Formats, ColumnMappingRenamesFields) {
  ProblemLog log(false);
  ColumnMap columns;
  columns.set("instruction", "prompt");
  columns.set("output", "response");
  const auto contents = read_lenient(R"({"prompt": "p", "response": "r"})", log, DataFormat::alpaca, columns);
  ASSERT_EQ(contents.samples.size(), 1u) << log.summary();
  EXPECT_EQ(contents.samples[0].sample.conversation.messages[1].content, "r");

  ColumnMap sharegpt;
  sharegpt.set("messages", "dialog");
  sharegpt.set("role", "speaker");
  sharegpt.set("content", "text");
  const auto renamed = read_lenient(
      R"({"dialog": [{"speaker": "user", "text": "q"}, {"speaker": "assistant", "text": "a"}]})", log,
      DataFormat::sharegpt, sharegpt);
  ASSERT_EQ(renamed.samples.size(), 1u) << log.summary();
}

TEST(Formats, UnknownColumnForFormatIsAConfigError) {
  ColumnMap columns;
  columns.set("instrucion", "prompt");
  EXPECT_THROW(columns.validate_for(DataFormat::alpaca, "cfg.yaml:3"), Error);
}

TEST(Formats, JsonListFileCountsItems) {
  ProblemLog log(false);
  const auto contents = read_lenient(R"([{"text": "a"}, {"text": 5}, {"text": "c"}])", log, DataFormat::auto_detect, {}, true);
  EXPECT_EQ(contents.samples.size(), 2u);
  EXPECT_EQ(contents.samples[1].line, 3);
  EXPECT_EQ(log.count(Problem::wrong_type), 1);
}

// ---- bad input: each reason, lenient (skip and count) and strict (stop with file:line) ----------

struct BadCase {
  const char* name;
  std::string line;
  Problem problem;
  DataFormat format;
};

std::vector<BadCase> bad_cases() {
  return {
      {"malformed json", R"({"text": "unterminated)", Problem::malformed_json, DataFormat::auto_detect},
      {"invalid utf8", "{\"text\": \"bad \xC3\x28 byte\"}", Problem::invalid_utf8, DataFormat::auto_detect},
      {"wrong type", R"({"instruction": "i", "output": 42})", Problem::wrong_type, DataFormat::alpaca},
      {"not an object", R"(["a", "b"])", Problem::wrong_type, DataFormat::text},
      {"missing field", R"({"instruction": "i"})", Problem::missing_field, DataFormat::alpaca},
      {"undetectable", R"({"foo": 1})", Problem::missing_field, DataFormat::auto_detect},
      {"empty conversation", R"({"messages": []})", Problem::empty_conversation, DataFormat::openai},
      {"unknown role", R"({"messages": [{"role": "robot", "content": "x"}]})", Problem::unknown_role, DataFormat::openai},
      {"unknown sharegpt role", R"({"conversations": [{"from": "alien", "value": "x"}]})", Problem::unknown_role, DataFormat::sharegpt},
      {"no assistant", R"({"messages": [{"role": "user", "content": "x"}]})", Problem::no_assistant_turn, DataFormat::openai},
      {"empty text", R"({"text": ""})", Problem::empty_text, DataFormat::text},
      {"bad function call", R"({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"}]})", Problem::malformed_json, DataFormat::sharegpt},
      {"tool call without arguments", R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f"}}]}]})", Problem::missing_field, DataFormat::openai},
      {"absurdly deep nesting", "{\"text\": " + std::string(100000, '[') + "}", Problem::malformed_json, DataFormat::text},
      {"content is a number", R"({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]})", Problem::wrong_type, DataFormat::openai},
      {"content part type is a number", R"({"messages": [{"role": "user", "content": [{"type": 1, "text": "q"}]}, {"role": "assistant", "content": "a"}]})", Problem::wrong_type, DataFormat::openai},
  };
}

TEST(BadInput, LenientSkipsCountsAndKeepsTheGoodRecords) {
  for (const auto& bad : bad_cases()) {
    ProblemLog log(false);
    const std::string good = bad.format == DataFormat::alpaca ? R"({"instruction": "i", "output": "o"})"
                             : bad.format == DataFormat::openai
                                 ? R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})"
                             : bad.format == DataFormat::sharegpt
                                 ? R"({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})"
                                 : R"({"text": "fine"})";
    const DataFormat format = bad.format == DataFormat::auto_detect ? DataFormat::text : bad.format;
    const auto contents = read_lenient(good + "\n" + bad.line + "\n\n" + good + "\n", log, format);
    EXPECT_EQ(contents.samples.size(), 2u) << bad.name;
    EXPECT_EQ(log.count(bad.problem), 1) << bad.name << ": " << log.summary();
    EXPECT_EQ(log.total(), 1) << bad.name;
    EXPECT_NE(log.summary().find("data.jsonl:2"), std::string::npos) << bad.name << ": " << log.summary();
    EXPECT_EQ(contents.samples[1].line, 4) << bad.name;
  }
}

TEST(BadInput, StrictStopsWithFileLineAndReason) {
  for (const auto& bad : bad_cases()) {
    const std::string message = strict_error("\n" + bad.line + "\n", bad.format);
    EXPECT_NE(message.find("data.jsonl:2: "), std::string::npos) << bad.name << ": " << message;
    EXPECT_NE(message.find(problem_name(bad.problem)), std::string::npos) << bad.name << ": " << message;
  }
}

TEST(BadInput, EmptyFile) {
  ProblemLog lenient(false);
  const auto contents = read_lenient("", lenient);
  EXPECT_TRUE(contents.samples.empty());
  EXPECT_EQ(lenient.count(Problem::empty_file), 1);
  EXPECT_NE(strict_error("  \n\n").find("empty"), std::string::npos);
}

TEST(BadInput, BrokenJsonListLosesTheFileWithItsLine) {
  ProblemLog log(false);
  const auto contents = read_lenient("[\n{\"text\": \"a\"},\n{\"text\": }\n]", log, DataFormat::auto_detect, {}, true);
  EXPECT_TRUE(contents.samples.empty());
  EXPECT_EQ(log.count(Problem::malformed_json), 1);
  EXPECT_NE(log.summary().find("data.jsonl:3"), std::string::npos) << log.summary();
  EXPECT_NE(strict_error(R"({"text": "a"})", DataFormat::auto_detect, true).find("must hold a list"), std::string::npos);
}

TEST(BadInput, LenientSummaryKeepsOnlyTheFirstFewLocations) {
  ProblemLog log(false);
  std::string text;
  for (int i = 0; i < 9; ++i) text += "{oops\n";
  read_lenient(text, log);
  EXPECT_EQ(log.count(Problem::malformed_json), 9);
  EXPECT_NE(log.summary().find("data.jsonl:5, ..."), std::string::npos) << log.summary();
  EXPECT_EQ(log.summary().find("data.jsonl:6"), std::string::npos) << log.summary();
}

TEST(BadInput, MissingFileAndWrongExtensionAreErrors) {
  ProblemLog log(false);
  EXPECT_THROW(read_dataset_file("/nonexistent/data.jsonl", DataFormat::auto_detect, {}, log), Error);
  EXPECT_THROW(read_dataset_file("/nonexistent/data.csv", DataFormat::auto_detect, {}, log), Error);
}

}  // namespace
}  // namespace qft::data
