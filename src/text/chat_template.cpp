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

Role parse_role(const nlohmann::ordered_json& message, size_t index) {
  QFT_CHECK(message.contains("role") && message["role"].is_string(), "message {}: 'role' must be a string", index);
  const std::string& role = message["role"].get_ref<const std::string&>();
  if (role == "system") return Role::system;
  if (role == "user") return Role::user;
  if (role == "assistant") return Role::assistant;
  if (role == "tool") return Role::tool;
  fail("message {}: unknown role '{}' (expected system, user, assistant or tool)", index, role);
}

ToolCall parse_tool_call(const nlohmann::ordered_json& raw, size_t message_index, size_t call_index) {
  QFT_CHECK(raw.is_object(), "message {} tool_calls[{}]: expected an object", message_index, call_index);
  // The template unwraps {"function": {...}} whenever "function" is present and truthy.
  const auto function_it = raw.find("function");
  const bool wrapped = function_it != raw.end() && !function_it->is_null() &&
                       !(function_it->is_object() && function_it->empty());
  const nlohmann::ordered_json& call = wrapped ? *function_it : raw;
  QFT_CHECK(call.is_object(), "message {} tool_calls[{}]: 'function' must be an object", message_index, call_index);
  QFT_CHECK(call.contains("name") && call["name"].is_string(), "message {} tool_calls[{}]: 'name' must be a string",
            message_index, call_index);
  QFT_CHECK(call.contains("arguments") && !call["arguments"].is_null(),
            "message {} tool_calls[{}]: 'arguments' is missing", message_index, call_index);
  return ToolCall{call["name"].get<std::string>(), call["arguments"]};
}

}  // namespace

Conversation conversation_from_hf_json(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools) {
  QFT_CHECK(messages.is_array(), "'messages' must be a list");
  QFT_CHECK(tools.is_null() || tools.is_array(), "'tools' must be a list");
  Conversation conversation;
  conversation.tools = tools;
  for (size_t i = 0; i < messages.size(); ++i) {
    const auto& raw = messages[i];
    QFT_CHECK(raw.is_object(), "message {}: expected an object", i);
    ChatMessage message;
    message.role = parse_role(raw, i);
    const auto content = raw.find("content");
    if (content != raw.end() && !content->is_null()) {
      QFT_CHECK(content->is_string(), "message {}: 'content' must be a string", i);
      message.content = content->get<std::string>();
    }
    for (const char* key : {"reasoning_content", "thinking", "reasoning"}) {
      const auto it = raw.find(key);
      if (it == raw.end() || it->is_null()) continue;
      QFT_CHECK(it->is_string(), "message {}: '{}' must be a string", i, key);
      message.reasoning_content = it->get<std::string>();
      break;
    }
    const auto calls = raw.find("tool_calls");
    if (calls != raw.end() && !calls->is_null()) {
      QFT_CHECK(calls->is_array(), "message {}: 'tool_calls' must be a list", i);
      QFT_CHECK(message.role == Role::assistant || calls->empty(), "message {}: only assistant messages have tool_calls", i);
      for (size_t c = 0; c < calls->size(); ++c) message.tool_calls.push_back(parse_tool_call((*calls)[c], i, c));
    }
    conversation.messages.push_back(std::move(message));
  }
  return conversation;
}

}  // namespace qft::text
