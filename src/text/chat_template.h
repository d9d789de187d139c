// The Qwen3 chat template (tokenizer_config.json of the Qwen3 models) rendered natively, byte for byte
// as transformers' apply_chat_template renders it, plus the byte spans of every assistant turn so the
// data pipeline can choose training targets after tokenizing the whole conversation once.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

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

// Builds a Conversation from HF-style JSON messages (role/content/reasoning_content/tool_calls, tool
// calls with or without the {"type": "function", "function": {...}} wrapper) and a tools array or null.
// `reasoning_content`, `thinking` and `reasoning` are aliases, as in transformers. Content null is "".
// Throws qft::Error naming the message index and the problem.
Conversation conversation_from_hf_json(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools);

}  // namespace qft::text
