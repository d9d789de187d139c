// One training sample after reading, before tokenizing: a chat conversation (rendered with the Qwen3
// template) or a raw text (continued pre-training, every token a target).
#pragma once

#include <string>

#include "text/chat_template.h"

namespace qft::data {

struct Sample {
  enum class Kind { chat, text };
  Kind kind = Kind::chat;
  text::Conversation conversation;  // kind == chat
  std::string text;                 // kind == text
};

}  // namespace qft::data
