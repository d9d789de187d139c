#include "data/formats.h"

#include <algorithm>

#include "core/config_reader.h"
#include "data/input_problems.h"

namespace qft::data {

using Json = nlohmann::ordered_json;
using text::ChatMessage;
using text::Role;
using text::ToolCall;

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
      tools = Json::parse(tools.get<std::string>());
    } catch (const Json::parse_error&) {
      bad_record(Problem::malformed_json, fmt::format("'{}' is a string but not JSON", key));
    }
  }
  if (tools.is_object()) tools = Json::array({tools});
  if (!tools.is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of tool schemas", key));
  for (const auto& tool : tools) {
    if (!tool.is_object()) bad_record(Problem::wrong_type, fmt::format("'{}' entries must be objects", key));
  }
  return tools;
}

ToolCall tool_call_from_json(const Json& raw, const std::string& what) {
  if (!raw.is_object()) bad_record(Problem::wrong_type, fmt::format("{}: a tool call must be an object", what));
  const auto function = raw.find("function");
  const Json& call = function != raw.end() && function->is_object() ? *function : raw;
  ToolCall out;
  out.name = required_string(call, "name", what);
  const auto arguments = call.find("arguments");
  if (arguments == call.end() || arguments->is_null())
    bad_record(Problem::missing_field, fmt::format("{}: tool call '{}' has no 'arguments'", what, out.name));
  out.arguments = *arguments;
  return out;
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
std::vector<ToolCall> sharegpt_function_calls(const std::string& value, size_t index) {
  Json parsed;
  try {
    parsed = Json::parse(value);
  } catch (const Json::parse_error&) {
    bad_record(Problem::malformed_json, fmt::format("message {}: function_call value is not JSON", index));
  }
  if (parsed.is_object()) parsed = Json::array({parsed});
  if (!parsed.is_array() || parsed.empty())
    bad_record(Problem::wrong_type, fmt::format("message {}: function_call must hold a tool call or a list of them", index));
  std::vector<ToolCall> calls;
  for (const auto& raw : parsed) calls.push_back(tool_call_from_json(raw, fmt::format("message {}", index)));
  return calls;
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
    if (tag == "function_call") {
      ChatMessage call = message(Role::assistant, "");
      call.tool_calls = sharegpt_function_calls(value, i);
      conversation.messages.push_back(std::move(call));
    } else {
      conversation.messages.push_back(message(role, value));
    }
  }
  check_conversation(conversation);
  return sample;
}

Role openai_role(const std::string& name, size_t index) {
  if (name == "system" || name == "developer") return Role::system;
  if (name == "user") return Role::user;
  if (name == "assistant") return Role::assistant;
  if (name == "tool" || name == "function") return Role::tool;
  bad_record(Problem::unknown_role,
             fmt::format("message {}: unknown role '{}' (expected system, user, assistant or tool)", index, name));
}

// Content: a string, null (an assistant turn with only tool calls) or a list of {"type": "text"} parts.
std::string openai_content(const Json& turn, const std::string& what) {
  const auto it = turn.find("content");
  if (it == turn.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    std::string joined;
    for (const auto& part : *it) {
      // find() (end() for a non-object) rather than value(), which throws when "type" is not a string.
      const auto type = part.find("type");
      if (type == part.end() || *type != "text" || !part.contains("text") || !part["text"].is_string())
        bad_record(Problem::wrong_type, fmt::format("{}: content parts must be {{\"type\": \"text\", \"text\": ...}}", what));
      joined += part["text"].get<std::string>();
    }
    return joined;
  }
  bad_record(Problem::wrong_type, fmt::format("{}: 'content' must be a string, got {}", what, json_type_name(*it)));
}

Sample parse_openai(const Json& record, const ColumnMap& columns) {
  const auto key = [&](const char* logical) { return columns.key(DataFormat::openai, logical); };
  Sample sample;
  text::Conversation& conversation = sample.conversation;
  const auto list = record.find(key("messages"));
  if (list == record.end() || list->is_null()) bad_record(Problem::missing_field, fmt::format("missing '{}'", key("messages")));
  if (!list->is_array()) bad_record(Problem::wrong_type, fmt::format("'{}' must be a list of messages", key("messages")));
  conversation.tools = tools_field(record, key("tools"));

  for (size_t i = 0; i < list->size(); ++i) {
    const Json& turn = (*list)[i];
    const std::string what = fmt::format("message {}", i);
    if (!turn.is_object()) bad_record(Problem::wrong_type, fmt::format("{}: expected an object", what));
    ChatMessage m;
    m.role = openai_role(required_string(turn, "role", what), i);
    m.content = openai_content(turn, what);
    // Same aliases as transformers (_alias_reasoning_fields).
    for (const char* reasoning_key : {"reasoning_content", "thinking", "reasoning"}) {
      const auto it = turn.find(reasoning_key);
      if (it == turn.end() || it->is_null()) continue;
      if (!it->is_string()) bad_record(Problem::wrong_type, fmt::format("{}: '{}' must be a string", what, reasoning_key));
      m.reasoning_content = it->get<std::string>();
      break;
    }
    // OpenAI fine-tuning files mark assistant turns to learn from with "weight": 1 (default) or 0.
    const auto weight = turn.find("weight");
    if (weight != turn.end() && !weight->is_null()) {
      if (!weight->is_number_integer() || (weight->get<int64_t>() != 0 && weight->get<int64_t>() != 1))
        bad_record(Problem::wrong_type, fmt::format("{}: 'weight' must be 0 or 1", what));
      m.trainable = weight->get<int64_t>() == 1;
    }
    const auto calls = turn.find("tool_calls");
    if (calls != turn.end() && !calls->is_null()) {
      if (!calls->is_array()) bad_record(Problem::wrong_type, fmt::format("{}: 'tool_calls' must be a list", what));
      if (m.role != Role::assistant && !calls->empty())
        bad_record(Problem::wrong_type, fmt::format("{}: only assistant messages may have tool_calls", what));
      for (const auto& call : *calls) m.tool_calls.push_back(tool_call_from_json(call, what));
    }
    conversation.messages.push_back(std::move(m));
  }
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
