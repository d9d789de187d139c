#include "data/formats.h"

#include <algorithm>

#include "core/config_reader.h"
#include "core/json_reader.h"
#include "data/input_problems.h"

namespace qft::data {

using Json = nlohmann::ordered_json;
using text::ChatMessage;
using text::Role;

namespace {

const std::map<std::string, std::string>& default_columns(DataFormat format) {
  static const std::map<std::string, std::string> alpaca = {
      {"instruction", "instruction"}, {"input", "input"}, {"output", "output"}, {"system", "system"},
      {"history", "history"}};
  static const std::map<std::string, std::string> sharegpt = {
      {"messages", "conversations"}, {"role", "from"}, {"content", "value"}, {"system", "system"}, {"tools", "tools"}};
  static const std::map<std::string, std::string> openai = {{"messages", "messages"}, {"tools", "tools"}};
  static const std::map<std::string, std::string> text = {{"text", "text"}};
  static const std::map<std::string, std::string> none;
  switch (format) {
    case DataFormat::alpaca: return alpaca;
    case DataFormat::sharegpt: return sharegpt;
    case DataFormat::openai: return openai;
    case DataFormat::text: return text;
    case DataFormat::auto_detect: return none;
  }
  return none;
}

const char* json_type_name(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return "a boolean";
    case Json::value_t::string: return "a string";
    case Json::value_t::array: return "a list";
    case Json::value_t::object: return "an object";
    default: return "a number";
  }
}

// A field that must exist and be a string.
const std::string& required_string(const Json& record, const std::string& key, const std::string& what) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) bad_record(Problem::missing_field, fmt::format("{}: missing '{}'", what, key));
  if (!it->is_string())
    bad_record(Problem::wrong_type, fmt::format("{}: '{}' must be a string, got {}", what, key, json_type_name(*it)));
  return it->get_ref<const std::string&>();
}

// A field that may be absent or null; otherwise a string.
std::string optional_string(const Json& record, const std::string& key, const std::string& what) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return "";
  if (!it->is_string())
    bad_record(Problem::wrong_type, fmt::format("{}: '{}' must be a string, got {}", what, key, json_type_name(*it)));
  return it->get<std::string>();
}

ChatMessage message(Role role, std::string content) {
  ChatMessage m;
  m.role = role;
  m.content = std::move(content);
  return m;
}

// Tools as a list, or (LLaMA-Factory style) a JSON string holding the list.
Json tools_field(const Json& record, const std::string& key) {
  const auto it = record.find(key);
  if (it == record.end() || it->is_null()) return Json();
  Json tools = *it;
  if (tools.is_string()) {
    if (tools.get_ref<const std::string&>().empty()) return Json();
    try {
      json::ReadOptions python;
      python.allow_non_finite = true;
      tools = json::parse_ordered(tools.get_ref<const std::string&>(), key, python);
    } catch (const json::JsonSyntaxError& e) {
      bad_record(Problem::malformed_json, fmt::format("'{}' is a string but not JSON ({})", key, e.reason()));
    }
  }
  if (tools.is_object()) tools = Json::array({tools});
  if (!tools.is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of tool schemas", key));
  for (const auto& tool : tools) {
    if (!tool.is_object()) bad_record(Problem::wrong_type, fmt::format("'{}' entries must be objects", key));
  }
  return tools;
}

// The shared message parser's errors, as this reader's problem names.
Problem problem_of(text::MessageProblem problem) {
  switch (problem) {
    case text::MessageProblem::missing_field: return Problem::missing_field;
    case text::MessageProblem::unknown_role: return Problem::unknown_role;
    case text::MessageProblem::wrong_type: break;
  }
  return Problem::wrong_type;
}

// One HF-style message through the one message parser (text::append_hf_message).
void append_message(const Json& raw, size_t index, const text::MessageOptions& options, text::Conversation& conversation) {
  try {
    text::append_hf_message(raw, index, options, conversation);
  } catch (const text::MessageError& e) {
    bad_record(problem_of(e.problem()), e.what());
  }
}

void check_conversation(const text::Conversation& conversation) {
  if (conversation.messages.empty()) bad_record(Problem::empty_conversation, "the conversation has no messages");
  const bool has_assistant = std::any_of(conversation.messages.begin(), conversation.messages.end(),
                                         [](const ChatMessage& m) { return m.role == Role::assistant; });
  if (!has_assistant) bad_record(Problem::no_assistant_turn, "the conversation has no assistant turn to train on");
}

Sample parse_alpaca(const Json& record, const ColumnMap& columns) {
  const auto key = [&](const char* logical) { return columns.key(DataFormat::alpaca, logical); };
  Sample sample;
  text::Conversation& conversation = sample.conversation;
  const std::string system = optional_string(record, key("system"), "alpaca record");
  if (!system.empty()) conversation.messages.push_back(message(Role::system, system));

  const auto history = record.find(key("history"));
  if (history != record.end() && !history->is_null()) {
    if (!history->is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of [prompt, answer] pairs", key("history")));
    for (size_t i = 0; i < history->size(); ++i) {
      const Json& pair = (*history)[i];
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string() || !pair[1].is_string())
        bad_record(Problem::wrong_type, fmt::format("'{}'[{}] must be a [prompt, answer] pair of strings", key("history"), i));
      conversation.messages.push_back(message(Role::user, pair[0].get<std::string>()));
      conversation.messages.push_back(message(Role::assistant, pair[1].get<std::string>()));
    }
  }
  std::string prompt = required_string(record, key("instruction"), "alpaca record");
  const std::string input = optional_string(record, key("input"), "alpaca record");
  // LLaMA-Factory joins instruction and input with a newline.
  if (!input.empty()) prompt += "\n" + input;
  conversation.messages.push_back(message(Role::user, prompt));
  conversation.messages.push_back(message(Role::assistant, required_string(record, key("output"), "alpaca record")));
  return sample;
}

Role sharegpt_role(const std::string& tag, size_t index) {
  if (tag == "human" || tag == "user") return Role::user;
  if (tag == "gpt" || tag == "assistant" || tag == "function_call") return Role::assistant;
  if (tag == "system") return Role::system;
  if (tag == "observation" || tag == "tool" || tag == "function") return Role::tool;
  bad_record(Problem::unknown_role,
             fmt::format("message {}: unknown role '{}' (expected human, gpt, system, function_call, observation or tool)",
                         index, tag));
}

// A function_call turn's value: {"name", "arguments"} or a list of them, as JSON text.
Json sharegpt_function_calls(const std::string& value, size_t index) {
  Json parsed;
  try {
    json::ReadOptions python;
    python.allow_non_finite = true;
    parsed = json::parse_ordered(value, "function_call", python);
  } catch (const json::JsonSyntaxError& e) {
    bad_record(Problem::malformed_json, fmt::format("message {}: function_call value is not JSON ({})", index, e.reason()));
  }
  if (parsed.is_object()) parsed = Json::array({parsed});
  if (!parsed.is_array() || parsed.empty())
    bad_record(Problem::wrong_type, fmt::format("message {}: function_call must hold a tool call or a list of them", index));
  return parsed;
}

Sample parse_sharegpt(const Json& record, const ColumnMap& columns) {
  const auto key = [&](const char* logical) { return columns.key(DataFormat::sharegpt, logical); };
  Sample sample;
  text::Conversation& conversation = sample.conversation;
  const auto list = record.find(key("messages"));
  if (list == record.end() || list->is_null()) bad_record(Problem::missing_field, fmt::format("missing '{}'", key("messages")));
  if (!list->is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of turns", key("messages")));
  const std::string system = optional_string(record, key("system"), "sharegpt record");
  if (!system.empty()) conversation.messages.push_back(message(Role::system, system));
  conversation.tools = tools_field(record, key("tools"));

  for (size_t i = 0; i < list->size(); ++i) {
    const Json& turn = (*list)[i];
    const std::string what = fmt::format("message {}", i);
    if (!turn.is_object()) bad_record(Problem::wrong_type, fmt::format("{}: expected an object", what));
    const std::string& tag = required_string(turn, key("role"), what);
    const Role role = sharegpt_role(tag, i);
    const std::string& value = required_string(turn, key("content"), what);
    Json hf_message = {{"role", text::role_name(role)}, {"content", value}};
    if (tag == "function_call") {
      hf_message["content"] = "";
      hf_message["tool_calls"] = sharegpt_function_calls(value, i);
    }
    append_message(hf_message, i, text::MessageOptions{}, conversation);
  }
  check_conversation(conversation);
  return sample;
}

Sample parse_openai(const Json& record, const ColumnMap& columns) {
  const auto key = [&](const char* logical) { return columns.key(DataFormat::openai, logical); };
  Sample sample;
  text::Conversation& conversation = sample.conversation;
  const auto list = record.find(key("messages"));
  if (list == record.end() || list->is_null()) bad_record(Problem::missing_field, fmt::format("missing '{}'", key("messages")));
  if (!list->is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of messages", key("messages")));
  conversation.tools = tools_field(record, key("tools"));

  text::MessageOptions options;
  options.accept_weight = true;
  for (size_t i = 0; i < list->size(); ++i) append_message((*list)[i], i, options, conversation);
  check_conversation(conversation);
  return sample;
}

Sample parse_text(const Json& record, const ColumnMap& columns) {
  Sample sample;
  sample.kind = Sample::Kind::text;
  sample.text = required_string(record, columns.key(DataFormat::text, "text"), "text record");
  if (sample.text.empty()) bad_record(Problem::empty_text, "the text is empty");
  return sample;
}

// The first element of a list under `key` says which chat format it is.
bool list_with_key(const Json& record, const std::string& list_key, const char* element_key) {
  const auto it = record.find(list_key);
  return it != record.end() && it->is_array() && !it->empty() && (*it)[0].is_object() && (*it)[0].contains(element_key);
}

}  // namespace

const char* format_name(DataFormat format) {
  switch (format) {
    case DataFormat::auto_detect: return "auto";
    case DataFormat::alpaca: return "alpaca";
    case DataFormat::sharegpt: return "sharegpt";
    case DataFormat::openai: return "openai";
    case DataFormat::text: return "text";
  }
  return "?";
}

DataFormat parse_format_name(const std::string& name) {
  if (name == "auto") return DataFormat::auto_detect;
  if (name == "alpaca") return DataFormat::alpaca;
  if (name == "sharegpt") return DataFormat::sharegpt;
  if (name == "openai" || name == "messages") return DataFormat::openai;
  if (name == "text") return DataFormat::text;
  fail("unknown data format '{}' (expected auto, alpaca, sharegpt, openai or text)", name);
}

const std::vector<std::string>& logical_columns(DataFormat format) {
  static const std::vector<std::string> alpaca = {"instruction", "input", "output", "system", "history"};
  static const std::vector<std::string> sharegpt = {"messages", "role", "content", "system", "tools"};
  static const std::vector<std::string> openai = {"messages", "tools"};
  static const std::vector<std::string> text = {"text"};
  static const std::vector<std::string> all = {"instruction", "input", "output", "system", "history", "messages",
                                               "role", "content", "tools", "text"};
  switch (format) {
    case DataFormat::alpaca: return alpaca;
    case DataFormat::sharegpt: return sharegpt;
    case DataFormat::openai: return openai;
    case DataFormat::text: return text;
    case DataFormat::auto_detect: return all;
  }
  return all;
}

std::string ColumnMap::key(DataFormat format, const std::string& logical) const {
  const auto it = overrides_.find(logical);
  if (it != overrides_.end()) return it->second;
  const auto& defaults = default_columns(format);
  const auto d = defaults.find(logical);
  return d == defaults.end() ? logical : d->second;
}

void ColumnMap::validate_for(DataFormat format, const std::string& where) const {
  const auto& allowed = logical_columns(format);
  for (const auto& [logical, key] : overrides_) {
    if (std::find(allowed.begin(), allowed.end(), logical) != allowed.end()) continue;
    const std::string suggestion = closest_match(logical, allowed);
    fail("{}: column '{}' does not exist in format {} (columns: {}){}", where, logical, format_name(format),
         fmt::format("{}", fmt::join(allowed, ", ")), suggestion.empty() ? "" : " (did you mean '" + suggestion + "'?)");
  }
}

DataFormat detect_format(const Json& record, ColumnMap& columns) {
  if (!record.is_object()) bad_record(Problem::wrong_type, "a record must be a JSON object");
  const std::string messages_override = columns.overrides("messages") ? columns.key(DataFormat::openai, "messages") : "";
  for (const std::string list_key : {messages_override, std::string("messages"), std::string("conversations")}) {
    if (list_key.empty()) continue;
    const bool sharegpt_style = list_with_key(record, list_key, columns.key(DataFormat::sharegpt, "role").c_str());
    const bool openai_style = list_with_key(record, list_key, "role");
    if (!sharegpt_style && !openai_style) continue;
    columns.set("messages", list_key);
    return sharegpt_style ? DataFormat::sharegpt : DataFormat::openai;
  }
  if (record.contains(columns.key(DataFormat::alpaca, "instruction")) &&
      record.contains(columns.key(DataFormat::alpaca, "output")))
    return DataFormat::alpaca;
  if (record.contains(columns.key(DataFormat::text, "text"))) return DataFormat::text;
  bad_record(Problem::missing_field,
             "cannot detect the data format: expected a 'messages' or 'conversations' list, 'instruction' and "
             "'output', or 'text' (set `format:` and `columns:` for this data set)");
}

Sample parse_record(const Json& record, DataFormat format, const ColumnMap& columns) {
  if (!record.is_object())
    bad_record(Problem::wrong_type, fmt::format("a record must be a JSON object, got {}", json_type_name(record)));
  switch (format) {
    case DataFormat::alpaca: return parse_alpaca(record, columns);
    case DataFormat::sharegpt: return parse_sharegpt(record, columns);
    case DataFormat::openai: return parse_openai(record, columns);
    case DataFormat::text: return parse_text(record, columns);
    case DataFormat::auto_detect: break;
  }
  fail("parse_record: the format must be detected first");
}

}  // namespace qft::data
