// qft-dist generate --model DIR [--adapter DIR] --input PROMPTS.jsonl [--output ANSWERS.jsonl] [flags]
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "cli/generate_batches.h"
#include "core/error.h"
#include "core/json_reader.h"
#include "core/files.h"
#include "generate/generator.h"

namespace qft::cli {
namespace {

void print_generate_usage() {
  std::fprintf(stderr,
               "usage: qft-dist generate --model DIR [--adapter DIR] --input PROMPTS.jsonl [--output OUT.jsonl]\n"
               "                         [--batch-size 8] [--no-thinking] [--ignore-eos] [sampling flags]\n\n"
               "Answers every line of PROMPTS.jsonl, in batches. A line is an object with one of\n"
               "  \"messages\": [{\"role\", \"content\"}, ...]  a conversation (optional \"tools\"), rendered with the\n"
               "                                          Qwen3 chat template and a generation prompt\n"
               "  \"prompt\": \"...\"                          one user turn, rendered the same way\n"
               "  \"text\": \"...\"                            raw text to continue (no template)\n"
               "and optionally \"enable_thinking\": true|false (default: true, or false with --no-thinking).\n"
               "Writes one JSON object per input line, in input order, to OUT.jsonl (atomically) or stdout:\n"
               "  {\"index\", \"text\", \"token_ids\", \"finish_reason\": \"stop\"|\"length\", \"prompt_tokens\",\n"
               "   \"completion_tokens\"}; token_ids end with the stop token when there is one, text does not.\n"
               "--ignore-eos generates max_new_tokens for every prompt (benchmarks).\n\n"
               "%s",
               generate::model_flags_usage());
}

struct Request {
  std::vector<int32_t> prompt;
};

Request parse_line(const std::string& line, const std::string& where, const text::Tokenizer& tokenizer,
                   bool enable_thinking) {
  nlohmann::ordered_json j;
  try {
    j = json::parse_ordered(line, where);
  } catch (const json::JsonSyntaxError& e) {
    fail("{}: not valid JSON (column {}: {})", where, e.column(), e.reason());
  }
  return Request{prompt_ids_from_json(j, where, tokenizer, enable_thinking)};
}

}  // namespace

int cmd_generate(const Args& args) {
  generate::ModelFlags flags;
  std::string input, output;
  int64_t batch_size = 8;
  bool enable_thinking = true, ignore_eos = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_generate_usage();
      return 0;
    }
    if (generate::parse_model_flag("generate", args, i, flags)) continue;
    if (a == "--no-thinking") {
      enable_thinking = false;
      continue;
    }
    if (a == "--ignore-eos") {
      ignore_eos = true;
      continue;
    }
    QFT_CHECK(a == "--input" || a == "--output" || a == "--batch-size",
              "generate: unknown option '{}' (see qft-dist generate --help)", a);
    QFT_CHECK(i + 1 < args.size(), "generate: {} needs a value (see qft-dist generate --help)", a);
    const std::string& v = args[++i];
    if (a == "--input") input = v;
    else if (a == "--output") output = v;
    else batch_size = parse_batch_size("generate", v);
  }
  QFT_CHECK(!input.empty(), "generate: --input PROMPTS.jsonl is required (see qft-dist generate --help)");
  QFT_CHECK(file_exists(input), "generate: --input {}: no such file", input);
  const generate::LoadedModel model = generate::load_model("generate", flags);
  model.options(flags, 0);  // bad sampling flags fail before any work

  // Requests, validated before any generation starts.
  std::vector<Request> requests;
  {
    for_each_nonblank_line(input, [&](const std::string& line, size_t line_no) {
      requests.push_back(parse_line(line, fmt::format("{}:{}", input, line_no), *model.tokenizer, enable_thinking));
    });
  }
  QFT_CHECK(!requests.empty(), "generate: {} has no prompts", input);

  std::vector<std::vector<int32_t>> prompts;
  for (const Request& r : requests) prompts.push_back(r.prompt);
  const std::vector<generate::Completion> completions =
      generate_in_batches("generate", model, *model.decoder, flags, prompts, batch_size, ignore_eos);

  std::string out;
  for (size_t i = 0; i < completions.size(); ++i) {
    const generate::Completion& c = completions[i];
    const nlohmann::json j = {{"index", i},
                              {"text", completion_text(model, c)},
                              {"token_ids", c.tokens},
                              {"finish_reason", c.stopped ? "stop" : "length"},
                              {"prompt_tokens", c.prompt_tokens},
                              {"completion_tokens", c.tokens.size()}};
    out += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  if (output.empty()) std::fwrite(out.data(), 1, out.size(), stdout);
  else write_file_atomic(output, out);
  return 0;
}

}  // namespace qft::cli
