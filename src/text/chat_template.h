// The Qwen3 chat template (tokenizer_config.json of the Qwen3 models) rendered natively, byte for byte
// as transformers' apply_chat_template renders it, plus the byte spans of every assistant turn so the
// data pipeline can choose training targets after tokenizing the whole conversation once.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace qft::text {

enum class Role { system, user, assistant, tool };

const char* role_name(Role role);

struct ToolCall {
  std::string name;
  // A JSON string is written raw (as the model emitted it); any other value is written as tojson.
  nlohmann::ordered_json arguments;
};

struct ChatMessage {
  Role role = Role::user;
  std::string content;
  // Separate reasoning; when absent, an inline "<think>…</think>" in `content` is split off instead.
  std::optional<std::string> reasoning_content;
  std::vector<ToolCall> tool_calls;  // assistant only
  // Not rendered: whether this assistant turn is a training target (OpenAI fine-tuning "weight": 0 turns
  // are context only).
  bool trainable = true;
};

struct Conversation {
  std::vector<ChatMessage> messages;
  // Tool schemas (a JSON array, written one per line with tojson); null or an empty array: no tools block.
  nlohmann::ordered_json tools;
};

struct TemplateOptions {
  bool add_generation_prompt = false;
  // Only affects the generation prompt: false pre-fills an empty think block, as the template does.
  bool enable_thinking = true;
};

// One assistant turn: [begin, end) covers everything after "<|im_start|>assistant\n" up to and including
// "<|im_end|>" (think block, answer, tool calls); the "\n" after "<|im_end|>" belongs to the next turn.
struct AssistantSpan {
  size_t message_index = 0;
  size_t begin = 0;
  size_t end = 0;
  bool trainable = true;  // the message's `trainable`
};

struct RenderedChat {
  std::string text;
  std::vector<AssistantSpan> assistant_spans;
};

RenderedChat render_qwen3_chat(const Conversation& conversation, const TemplateOptions& options = {});

// The one parser of HF-style chat messages, used by the data reader (OpenAI/`messages` records, ShareGPT
// after its role mapping) and by the tests. It accepts what the Qwen3 template run by transformers
// renders, renders it the same way, and refuses with a MessageError what transformers fails on; a few
// inputs transformers renders silently wrong are refused too. docs/DATA.md ("Messages") lists every case:
//   - roles system, user, assistant, tool; any other role (developer, function, ...) is an error: the
//     template drops such a message without a word;
//   - content: a string; null/absent for assistant and tool messages ("", as for tool messages in
//     transformers); for tool messages any other JSON value is printed as Python's str() prints it (the
//     template writes `{{ message.content }}`); for the other roles a non-string is an error (transformers
//     raises: the template concatenates it to text);
//   - reasoning_content / thinking / reasoning (aliases, as in transformers): a string or null;
//   - tool_calls (assistant only; a list): {"name", "arguments"} optionally inside a truthy "function"
//     (an empty or null "function" is ignored, as Jinja's `if tool_call.function` ignores it); a name
//     that is not a string is printed as Python's str(); "arguments" must be present (a string is
//     written raw, any other value with tojson);
//   - "weight" (OpenAI fine-tuning: 0 or 1) when `accept_weight` is set.
enum class MessageProblem { wrong_type, missing_field, unknown_role };

class MessageError : public Error {
 public:
  MessageError(MessageProblem problem, const std::string& message) : Error(message), problem_(problem) {}
  MessageProblem problem() const { return problem_; }

 private:
  MessageProblem problem_;
};

struct MessageOptions {
  bool accept_weight = false;
};

Conversation conversation_from_hf_json(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                       const MessageOptions& options = {});

// One message of that list (`index` for messages), appended to `conversation`.
void append_hf_message(const nlohmann::ordered_json& message, size_t index, const MessageOptions& options,
                       Conversation& conversation);

}  // namespace qft::text
