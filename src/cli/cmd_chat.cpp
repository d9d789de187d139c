// qft-dist chat --model DIR [--adapter DIR] [--system TEXT] [--no-thinking] [--hide-thinking] [flags]
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "generate/generator.h"
#include "text/chat_template.h"

namespace qft::cli {
namespace {

void print_chat_usage() {
  std::fprintf(stderr,
               "usage: qft-dist chat --model DIR [--adapter DIR] [--system TEXT] [--no-thinking]\n"
               "                     [--hide-thinking] [sampling flags]\n\n"
               "Interactive chat: each line read from stdin is a user turn; the answer streams to stdout as it\n"
               "is generated and the conversation is kept. <think> blocks are shown dimmed on a terminal, or\n"
               "left out with --hide-thinking. Lines starting with / are commands:\n"
               "  /reset          forget the conversation (the system prompt stays)\n"
               "  /think on|off   enable_thinking of the chat template (default on)\n"
               "  /system TEXT    set the system prompt (empty: none) and reset\n"
               "  /exit           quit (as does end of input)\n\n"
               "%s",
               generate::model_flags_usage());
}

constexpr const char* kDim = "\x1b[2m";
constexpr const char* kReset = "\x1b[0m";

// Writes streamed pieces: thinking dimmed (terminal), plain (pipe) or dropped (--hide-thinking); the
// blank lines after a hidden block are dropped too.
class AnswerPrinter {
 public:
  AnswerPrinter(bool hide_thinking, bool color) : hide_(hide_thinking), color_(color) {}

  void write(const std::vector<generate::ThinkSplitter::Piece>& pieces) {
    for (const auto& piece : pieces) {
      std::string text = piece.text;
      if (piece.thinking) {
        after_hidden_ = hide_;
        if (hide_) continue;
        if (color_ && !dim_) {
          std::fputs(kDim, stdout);
          dim_ = true;
        }
      } else {
        if (dim_) {
          std::fputs(kReset, stdout);
          dim_ = false;
        }
        if (after_hidden_) {
          const size_t start = text.find_first_not_of('\n');
          text = start == std::string::npos ? std::string() : text.substr(start);
          if (!text.empty()) after_hidden_ = false;
        }
      }
      std::fwrite(text.data(), 1, text.size(), stdout);
    }
    std::fflush(stdout);
  }

  void end() {
    if (dim_) {
      std::fputs(kReset, stdout);
      dim_ = false;
    }
    after_hidden_ = false;
    std::fputs("\n", stdout);
    std::fflush(stdout);
  }

 private:
  bool hide_, color_;
  bool dim_ = false;
  bool after_hidden_ = false;
};

}  // namespace

int cmd_chat(const Args& args) {
  generate::ModelFlags flags;
  std::string system;
  bool thinking = true, hide_thinking = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_chat_usage();
      return 0;
    }
    if (generate::parse_model_flag("chat", args, i, flags)) continue;
    if (a == "--no-thinking") thinking = false;
    else if (a == "--hide-thinking") hide_thinking = true;
    else if (a == "--system") {
      QFT_CHECK(i + 1 < args.size(), "chat: --system needs a value (see qft-dist chat --help)");
      system = args[++i];
    } else {
      fail("chat: unknown option '{}' (see qft-dist chat --help)", a);
    }
  }
  const generate::LoadedModel model = generate::load_model("chat", flags);
  model.options(flags, 0);  // bad sampling flags fail before the first turn
  const bool interactive = isatty(STDIN_FILENO) != 0;
  AnswerPrinter printer(hide_thinking, isatty(STDOUT_FILENO) != 0);

  text::Conversation conversation;
  auto reset = [&] {
    conversation.messages.clear();
    if (!system.empty()) conversation.messages.push_back({text::Role::system, system, std::nullopt, {}, true});
  };
  reset();
  if (interactive)
    std::fprintf(stderr, "qft chat: /reset, /think on|off, /system TEXT, /exit (thinking %s)\n",
                 thinking ? "on" : "off");
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    if (interactive) std::fputs("> ", stderr);
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '/') {
      const size_t space = line.find(' ');
      const std::string cmd = line.substr(0, space);
      const std::string arg = space == std::string::npos ? "" : line.substr(space + 1);
      if (cmd == "/exit" || cmd == "/quit") break;
      if (cmd == "/reset") {
        reset();
      } else if (cmd == "/think" && (arg == "on" || arg == "off")) {
        thinking = arg == "on";
      } else if (cmd == "/system") {
        system = arg;
        reset();
      } else {
        std::fprintf(stderr, "unknown command '%s' (/reset, /think on|off, /system TEXT, /exit)\n", line.c_str());
      }
      continue;
    }
    conversation.messages.push_back({text::Role::user, line, std::nullopt, {}, true});
    text::TemplateOptions options;
    options.add_generation_prompt = true;
    options.enable_thinking = thinking;
    // The whole conversation is rendered and prefilled again each turn: the template drops the
    // reasoning of earlier assistant turns, so the previous turn's cache is not a prefix of this prompt.
    const std::vector<int32_t> prompt = model.tokenizer->encode(text::render_qwen3_chat(conversation, options).text);
    const generate::GenerationOptions gen = model.options(flags, static_cast<int64_t>(prompt.size()));
    generate::TextStream stream(*model.tokenizer, model.decodable);
    generate::ThinkSplitter splitter;
    std::string answer;
    const std::vector<generate::Completion> done = generate::generate_batch(
        *model.decoder, {prompt}, {turn++}, gen, [&](size_t, int32_t id) {
          if (std::find(gen.stop_ids.begin(), gen.stop_ids.end(), id) != gen.stop_ids.end()) return;
          const std::string piece = stream.push(id);
          answer += piece;
          printer.write(splitter.push(piece));
        });
    const std::string tail = stream.finish();
    answer += tail;
    printer.write(splitter.push(tail));
    printer.write(splitter.finish());
    printer.end();
    if (!done[0].stopped)
      std::fprintf(stderr, "[stopped after %zu tokens: --max-new-tokens]\n", done[0].tokens.size());
    conversation.messages.push_back({text::Role::assistant, answer, std::nullopt, {}, true});
  }
  return 0;
}

}  // namespace qft::cli
