#include "text/chat_template.h"

#include <string_view>

#include "core/error.h"
#include "text/python_json.h"

namespace qft::text {

namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kToolsPreamble =
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
constexpr std::string_view kToolsPostamble =
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n";

// Python str.lstrip('\n') / rstrip('\n') / strip('\n').
std::string_view lstrip_newlines(std::string_view s) {
  while (!s.empty() && s.front() == '\n') s.remove_prefix(1);
  return s;
}
std::string_view rstrip_newlines(std::string_view s) {
  while (!s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}
std::string_view strip_newlines(std::string_view s) { return rstrip_newlines(lstrip_newlines(s)); }

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Python s.split(sep)[0] and s.split(sep)[-1].
std::string_view before_first(std::string_view s, std::string_view sep) {
  const size_t pos = s.find(sep);
  return pos == std::string_view::npos ? s : s.substr(0, pos);
}
std::string_view after_last(std::string_view s, std::string_view sep) {
  const size_t pos = s.rfind(sep);
  return pos == std::string_view::npos ? s : s.substr(pos + sep.size());
}

bool has_tools(const nlohmann::ordered_json& tools) { return tools.is_array() && !tools.empty(); }

// The index of the last user message that is a real query (not a tool result wrapped as a user turn);
// assistant turns after it keep their reasoning. Without one, the template uses the last index.
size_t last_query_index(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    const ChatMessage& m = messages[i];
    if (m.role != Role::user) continue;
    const bool wrapped_tool_result =
        starts_with(m.content, "<tool_response>") && ends_with(m.content, "</tool_response>");
    if (!wrapped_tool_result) return i;
  }
  return messages.empty() ? 0 : messages.size() - 1;
}

void render_assistant(const ChatMessage& message, bool after_last_query, bool is_last, std::string& out) {
  std::string_view content = message.content;
  std::string_view reasoning;
  if (message.reasoning_content) {
    reasoning = *message.reasoning_content;
  } else if (content.find("</think>") != std::string_view::npos) {
    reasoning = lstrip_newlines(after_last(rstrip_newlines(before_first(content, "</think>")), "<think>"));
    content = lstrip_newlines(after_last(content, "</think>"));
  }
  if (after_last_query && (is_last || !reasoning.empty())) {
    out += "<think>\n";
    out += strip_newlines(reasoning);
    out += "\n</think>\n\n";
    out += lstrip_newlines(content);
  } else {
    out += content;
  }
  for (size_t i = 0; i < message.tool_calls.size(); ++i) {
    const ToolCall& call = message.tool_calls[i];
    if (i > 0 || !content.empty()) out += "\n";
    out += "<tool_call>\n{\"name\": \"";
    out += call.name;
    out += "\", \"arguments\": ";
    if (call.arguments.is_string()) {
      out += call.arguments.get_ref<const std::string&>();
    } else {
      out += python_json_dumps(call.arguments);
    }
    out += "}\n</tool_call>";
  }
}

}  // namespace

const char* role_name(Role role) {
  switch (role) {
    case Role::system: return "system";
    case Role::user: return "user";
    case Role::assistant: return "assistant";
    case Role::tool: return "tool";
  }
  return "?";
}

RenderedChat render_qwen3_chat(const Conversation& conversation, const TemplateOptions& options) {
  const std::vector<ChatMessage>& messages = conversation.messages;
  RenderedChat rendered;
  std::string& out = rendered.text;
  const bool first_is_system = !messages.empty() && messages[0].role == Role::system;

  if (has_tools(conversation.tools)) {
    out += kImStart;
    out += "system\n";
    if (first_is_system) out += messages[0].content + "\n\n";
    out += kToolsPreamble;
    for (const auto& tool : conversation.tools) {
      out += "\n";
      out += python_json_dumps(tool);
    }
    out += kToolsPostamble;
  } else if (first_is_system) {
    out += kImStart;
    out += "system\n" + messages[0].content;
    out += kImEnd;
    out += "\n";
  }

  const size_t query_index = last_query_index(messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    const bool is_last = i + 1 == messages.size();
    switch (message.role) {
      case Role::system:
        if (i == 0) break;  // rendered above
        [[fallthrough]];
      case Role::user:
        out += kImStart;
        out += role_name(message.role);
        out += "\n" + message.content;
        out += kImEnd;
        out += "\n";
        break;
      case Role::assistant: {
        out += kImStart;
        out += "assistant\n";
        AssistantSpan span;
        span.message_index = i;
        span.trainable = message.trainable;
        span.begin = out.size();
        render_assistant(message, i > query_index, is_last, out);
        out += kImEnd;
        span.end = out.size();
        out += "\n";
        rendered.assistant_spans.push_back(span);
        break;
      }
      case Role::tool:
        if (i == 0 || messages[i - 1].role != Role::tool) {
          out += kImStart;
          out += "user";
        }
        out += "\n<tool_response>\n" + message.content + "\n</tool_response>";
        if (is_last || messages[i + 1].role != Role::tool) {
          out += kImEnd;
          out += "\n";
        }
        break;
    }
  }

  if (options.add_generation_prompt) {
    out += kImStart;
    out += "assistant\n";
    if (!options.enable_thinking) out += "<think>\n\n</think>\n\n";
  }
  return rendered;
}

namespace {

const char* type_name(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::null: return "null";
    case nlohmann::ordered_json::value_t::boolean: return "a boolean";
    case nlohmann::ordered_json::value_t::string: return "a string";
    case nlohmann::ordered_json::value_t::array: return "a list";
    case nlohmann::ordered_json::value_t::object: return "an object";
    default: return "a number";
  }
}

template <typename... Args>
[[noreturn]] void refuse(MessageProblem problem, fmt::format_string<Args...> format, Args&&... args) {
  throw MessageError(problem, fmt::format(format, std::forward<Args>(args)...));
}

// Jinja truthiness (Python's bool()).
bool truthy(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::null: return false;
    case nlohmann::ordered_json::value_t::boolean: return value.get<bool>();
    case nlohmann::ordered_json::value_t::number_integer: return value.get<int64_t>() != 0;
    case nlohmann::ordered_json::value_t::number_unsigned: return value.get<uint64_t>() != 0;
    case nlohmann::ordered_json::value_t::number_float: return value.get<double>() != 0.0;
    default: return !value.empty();  // strings, lists, objects; big integers are never 0
  }
}

Role parse_role(const nlohmann::ordered_json& message, size_t index) {
  const auto it = message.find("role");
  if (it == message.end() || it->is_null()) refuse(MessageProblem::missing_field, "message {}: missing 'role'", index);
  if (!it->is_string())
    refuse(MessageProblem::wrong_type, "message {}: 'role' must be a string, got {}", index, type_name(*it));
  const std::string& role = it->get_ref<const std::string&>();
  if (role == "system") return Role::system;
  if (role == "user") return Role::user;
  if (role == "assistant") return Role::assistant;
  if (role == "tool") return Role::tool;
  refuse(MessageProblem::unknown_role,
         "message {}: role '{}' is not rendered by the Qwen3 chat template (transformers drops the message "
         "silently); use system, user, assistant or tool{}",
         index, role, role == "developer" ? " ('developer' is 'system' for Qwen3)" : role == "function" ? " ('function' results are 'tool' messages)" : "");
}

ToolCall parse_tool_call(const nlohmann::ordered_json& raw, size_t message_index, size_t call_index) {
  if (!raw.is_object())
    refuse(MessageProblem::wrong_type, "message {} tool_calls[{}]: expected an object, got {}", message_index,
           call_index, type_name(raw));
  // The template unwraps {"function": {...}} whenever "function" is truthy.
  const auto function_it = raw.find("function");
  const bool wrapped = function_it != raw.end() && truthy(*function_it);
  if (wrapped && !function_it->is_object())
    refuse(MessageProblem::wrong_type, "message {} tool_calls[{}]: 'function' must be an object, got {}",
           message_index, call_index, type_name(*function_it));
  const nlohmann::ordered_json& call = wrapped ? *function_it : raw;
  const auto name = call.find("name");
  if (name == call.end() || name->is_null())
    refuse(MessageProblem::missing_field, "message {} tool_calls[{}]: missing 'name'", message_index, call_index);
  const auto arguments = call.find("arguments");
  if (arguments == call.end())
    refuse(MessageProblem::missing_field, "message {} tool_calls[{}]: missing 'arguments'", message_index, call_index);
  return ToolCall{python_str(*name), *arguments};
}

}  // namespace

void append_hf_message(const nlohmann::ordered_json& raw, size_t i, const MessageOptions& options,
                       Conversation& conversation) {
  if (!raw.is_object()) refuse(MessageProblem::wrong_type, "message {}: expected an object, got {}", i, type_name(raw));
  ChatMessage message;
  message.role = parse_role(raw, i);
  const auto content = raw.find("content");
  if (content == raw.end() || content->is_null()) {
    if (message.role == Role::user || message.role == Role::system)
      refuse(MessageProblem::missing_field, "message {}: missing 'content' (a {} message needs text)", i,
             role_name(message.role));
  } else if (content->is_string()) {
    message.content = content->get<std::string>();
  } else if (message.role == Role::tool) {
    message.content = python_str(*content);
  } else {
    refuse(MessageProblem::wrong_type,
           "message {}: 'content' of a {} message must be a string, got {} (the Qwen3 template cannot render it; "
           "transformers fails too){}",
           i, role_name(message.role), type_name(*content),
           content->is_array() ? "; join the text of content parts into one string" : "");
  }
  for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
    const auto it = raw.find(key);
    if (it == raw.end() || it->is_null()) continue;
    if (!it->is_string())
      refuse(MessageProblem::wrong_type, "message {}: '{}' must be a string, got {}", i, key, type_name(*it));
    message.reasoning_content = it->get<std::string>();
    break;
  }
  const auto calls = raw.find("tool_calls");
  if (calls != raw.end() && !calls->is_null()) {
    if (!calls->is_array())
      refuse(MessageProblem::wrong_type, "message {}: 'tool_calls' must be a list, got {}", i, type_name(*calls));
    if (message.role != Role::assistant && !calls->empty())
      refuse(MessageProblem::wrong_type,
             "message {}: only assistant messages have tool_calls (the template would drop them silently)", i);
    for (size_t c = 0; c < calls->size(); ++c) message.tool_calls.push_back(parse_tool_call((*calls)[c], i, c));
  }
  if (options.accept_weight) {
    // OpenAI fine-tuning files mark assistant turns to learn from with "weight": 1 (default) or 0.
    const auto weight = raw.find("weight");
    if (weight != raw.end() && !weight->is_null()) {
      if (!weight->is_number_integer() || (weight->get<int64_t>() != 0 && weight->get<int64_t>() != 1))
        refuse(MessageProblem::wrong_type, "message {}: 'weight' must be 0 or 1", i);
      message.trainable = weight->get<int64_t>() == 1;
    }
  }
  conversation.messages.push_back(std::move(message));
}

Conversation conversation_from_hf_json(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                       const MessageOptions& options) {
  if (!messages.is_array()) refuse(MessageProblem::wrong_type, "'messages' must be a list, got {}", type_name(messages));
  if (!tools.is_null() && !tools.is_array())
    refuse(MessageProblem::wrong_type, "'tools' must be a list, got {}", type_name(tools));
  Conversation conversation;
  conversation.tools = tools;
  for (size_t i = 0; i < messages.size(); ++i) append_hf_message(messages[i], i, options, conversation);
  return conversation;
}

}  // namespace qft::text
