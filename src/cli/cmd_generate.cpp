// qft-dist generate --model DIR [--adapter DIR] --input PROMPTS.jsonl [--output ANSWERS.jsonl] [flags]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "core/files.h"
#include "generate/generator.h"
#include "text/chat_template.h"

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
    j = nlohmann::ordered_json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON ({})", where, e.what());
  }
  QFT_CHECK(j.is_object(), "{}: expected a JSON object with \"messages\", \"prompt\" or \"text\"", where);
  const int kinds = static_cast<int>(j.contains("messages")) + static_cast<int>(j.contains("prompt")) +
                    static_cast<int>(j.contains("text"));
  QFT_CHECK(kinds == 1, "{}: expected exactly one of \"messages\", \"prompt\" or \"text\"", where);
  if (j.contains("enable_thinking")) {
    QFT_CHECK(j["enable_thinking"].is_boolean(), "{}: \"enable_thinking\" must be true or false", where);
    enable_thinking = j["enable_thinking"].get<bool>();
  }
  Request r;
  if (j.contains("text")) {
    QFT_CHECK(j["text"].is_string(), "{}: \"text\" must be a string", where);
    r.prompt = tokenizer.encode(j["text"].get<std::string>());
    QFT_CHECK(!r.prompt.empty(), "{}: \"text\" is empty", where);
    return r;
  }
  nlohmann::ordered_json messages;
  if (j.contains("prompt")) {
    QFT_CHECK(j["prompt"].is_string(), "{}: \"prompt\" must be a string", where);
    messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", j["prompt"]}}});
  } else {
    QFT_CHECK(j["messages"].is_array() && !j["messages"].empty(), "{}: \"messages\" must be a non-empty array", where);
    messages = j["messages"];
  }
  text::Conversation conversation;
  try {
    const nlohmann::ordered_json tools = j.contains("tools") ? j["tools"] : nlohmann::ordered_json(nullptr);
    conversation = text::conversation_from_hf_json(messages, tools);
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
  text::TemplateOptions options;
  options.add_generation_prompt = true;
  options.enable_thinking = enable_thinking;
  r.prompt = tokenizer.encode(text::render_qwen3_chat(conversation, options).text);
  return r;
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
    else {
      try {
        size_t used = 0;
        batch_size = std::stoll(v, &used);
        QFT_CHECK(used == v.size() && batch_size >= 1, "");
      } catch (const std::exception&) {
        fail("generate: --batch-size '{}' is not a positive integer", v);
      }
    }
  }
  QFT_CHECK(!input.empty(), "generate: --input PROMPTS.jsonl is required (see qft-dist generate --help)");
  QFT_CHECK(file_exists(input), "generate: --input {}: no such file", input);
  const generate::LoadedModel model = generate::load_model("generate", flags);
  model.options(flags, 0);  // bad sampling flags fail before any work

  // Requests, validated before any generation starts.
  std::vector<Request> requests;
  {
    const std::string content = read_file(input);
    size_t line_no = 0, begin = 0;
    while (begin < content.size()) {
      size_t end = content.find('\n', begin);
      if (end == std::string::npos) end = content.size();
      ++line_no;
      const std::string line = content.substr(begin, end - begin);
      begin = end + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      requests.push_back(parse_line(line, fmt::format("{}:{}", input, line_no), *model.tokenizer, enable_thinking));
    }
  }
  QFT_CHECK(!requests.empty(), "generate: {} has no prompts", input);

  // Batches of similar lengths (less padding); answers go back in input order. Each request samples from
  // its own stream (seed, index), so answers do not depend on the batching.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].prompt.size() < requests[b].prompt.size(); });
  std::vector<generate::Completion> completions(requests.size());
  std::vector<int64_t> max_new(requests.size());
  generate::Decoder& decoder = *model.decoder;
  const auto start = std::chrono::steady_clock::now();
  int64_t generated = 0;
  for (size_t first = 0; first < order.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(order.size(), first + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> streams;
    int64_t longest = 0;
    for (size_t k = first; k < last; ++k) {
      prompts.push_back(requests[order[k]].prompt);
      streams.push_back(order[k]);
      longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts.back().size()));
    }
    generate::GenerationOptions options = model.options(flags, longest);
    if (ignore_eos) options.stop_ids.clear();
    const auto batch_start = std::chrono::steady_clock::now();
    const std::vector<generate::Completion> done = generate::generate_batch(decoder, prompts, streams, options);
    int64_t batch_tokens = 0;
    for (size_t k = first; k < last; ++k) {
      completions[order[k]] = done[k - first];
      batch_tokens += static_cast<int64_t>(done[k - first].tokens.size());
    }
    generated += batch_tokens;
    const auto now = std::chrono::steady_clock::now();
    const double batch_seconds = std::chrono::duration<double>(now - batch_start).count();
    const double seconds = std::chrono::duration<double>(now - start).count();
    // Time from the prompt's prefill to the last token (host-synchronised: tokens are read every step).
    spdlog::info("generate: batch of {} prompts: {} new tokens in {:.3f} s, {:.1f} tokens/s; {}/{} prompts done, "
                 "{:.1f} tokens/s overall",
                 last - first, batch_tokens, batch_seconds, batch_tokens / std::max(batch_seconds, 1e-9), last,
                 order.size(), generated / std::max(seconds, 1e-9));
  }

  std::string out;
  for (size_t i = 0; i < completions.size(); ++i) {
    const generate::Completion& c = completions[i];
    std::vector<int32_t> answer = c.tokens;
    if (c.stopped) answer.pop_back();
    const nlohmann::json j = {{"index", i},
                              {"text", generate::decode_generated(*model.tokenizer, model.decodable, answer)},
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
