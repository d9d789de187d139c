// qft-dist eval --generate SET.jsonl --model DIR [--adapter DIR] [--extract RULE] [--output-dir DIR] [flags]:
// generation-based scoring. Every item is answered by the base model and, with --adapter, by the base +
// adapter (the same loaded weights, a second decoder without the adapter for the base), the answer is read
// out of the text after its <think> block (text/answer_extraction.h) and compared with the reference.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
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
#include "text/answer_extraction.h"

namespace qft::cli {
namespace {

namespace fs = std::filesystem;

struct Item {
  nlohmann::ordered_json line;
  std::string where;              // FILE:LINE
  std::string reference;          // canonical for the rule
  nlohmann::ordered_json id;      // the line's "id", else null
  nlohmann::ordered_json answer;  // the reference as written
};

// Reads and checks every line (JSON, "answer" usable by the rule, one prompt kind) before a model loads.
std::vector<Item> read_items(const std::string& path, text::AnswerRule rule) {
  std::vector<Item> items;
  for_each_nonblank_line(path, [&](const std::string& line, size_t line_no) {
    Item item;
    item.where = fmt::format("{}:{}", path, line_no);
    try {
      item.line = json::parse_ordered(line, item.where);
    } catch (const json::JsonSyntaxError& e) {
      fail("{}: not valid JSON (column {}: {})", item.where, e.column(), e.reason());
    }
    QFT_CHECK(item.line.is_object(), "{}: expected a JSON object with \"prompt\" or \"messages\" and \"answer\"",
              item.where);
    QFT_CHECK(item.line.contains("prompt") || item.line.contains("messages") || item.line.contains("text"),
              "{}: expected \"prompt\" (a string) or \"messages\" (a conversation)", item.where);
    QFT_CHECK(item.line.contains("answer"), "{}: expected \"answer\" (the reference: a string or a number)",
              item.where);
    item.answer = item.line["answer"];
    QFT_CHECK(item.answer.is_string() || item.answer.is_number(),
              "{}: expected \"answer\" to be a string or a number, got {}", item.where, json::excerpt(item.answer));
    const std::string written = item.answer.is_string() ? item.answer.get<std::string>() : item.answer.dump();
    try {
      item.reference = text::canonical_reference(rule, written);
    } catch (const Error& e) {
      fail("{}: {}", item.where, e.what());
    }
    if (item.line.contains("id")) item.id = item.line["id"];
    items.push_back(std::move(item));
  });
  QFT_CHECK(!items.empty(), "eval: {} has no items", path);
  return items;
}

struct Scored {
  std::string text;
  std::optional<std::string> extracted;
  bool correct = false;
  bool used_thinking = false;
  bool stopped = false;
  int64_t completion_tokens = 0;
};

struct ModelScore {
  std::string name;
  std::vector<Scored> rows;
  int64_t correct = 0;
  double mean_tokens = 0, thinking_share = 0, accuracy = 0;
};

ModelScore score(const std::string& name, const generate::LoadedModel& model, generate::Decoder& decoder,
                 const generate::ModelFlags& flags, const std::vector<Item>& items,
                 const std::vector<std::vector<int32_t>>& prompts, int64_t batch_size, text::AnswerRule rule) {
  ModelScore s;
  s.name = name;
  const std::vector<generate::Completion> completions =
      generate_in_batches("eval " + name, model, decoder, flags, prompts, batch_size, /*ignore_eos=*/false);
  int64_t tokens = 0, thinking = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    Scored r;
    r.text = completion_text(model, completions[i]);
    const text::ThinkingSplit split = text::split_thinking(r.text);
    r.extracted = text::extract_answer(rule, split.answer);
    r.correct = text::answer_matches(rule, r.extracted, items[i].reference);
    r.used_thinking = split.used_thinking;
    r.stopped = completions[i].stopped;
    r.completion_tokens = static_cast<int64_t>(completions[i].tokens.size());
    s.correct += r.correct;
    tokens += r.completion_tokens;
    thinking += r.used_thinking;
    s.rows.push_back(std::move(r));
  }
  const double n = static_cast<double>(items.size());
  s.accuracy = static_cast<double>(s.correct) / n;
  s.mean_tokens = static_cast<double>(tokens) / n;
  s.thinking_share = static_cast<double>(thinking) / n;
  return s;
}

}  // namespace

void print_eval_generate_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist eval --generate SET.jsonl --model DIR [--adapter DIR] [--extract RULE]\n"
               "                     [--output-dir DIR] [--batch-size 8] [--no-thinking] [sampling flags]\n\n"
               "Generation-based scoring: each line of SET.jsonl has \"prompt\" (a string) or \"messages\" (a\n"
               "conversation), \"answer\" (the reference: a string or a number), optionally \"id\" and\n"
               "\"enable_thinking\". The base model and, with --adapter, the base + adapter answer every item\n"
               "(greedy unless --do-sample); the answer is read from the text after its <think> block by RULE:\n"
               "  last_number  the last number (\"1,000\" = 1000.0), compared numerically   (default)\n"
               "  boxed        the content of the last \\boxed{...}, compared as exact (or as numbers)\n"
               "  exact        the whole answer, compared after normalisation (whitespace, case, trailing .,;:!?)\n"
               "  choice       a letter A-J: the last \"answer: X\", else the last standalone capital A-J\n"
               "Prints a table (accuracy, correct/total, mean generated tokens, share that used thinking) and,\n"
               "with --output-dir, writes results.jsonl (per item) and summary.json there. Runs on rank 0 only.\n\n"
               "%s",
               generate::model_flags_usage());
}

int cmd_eval_generate(const Args& args, parallel::MpiRuntime& mpi) {
  generate::ModelFlags flags;
  std::string set_path, output_dir, rule_name = "last_number";
  int64_t batch_size = 8;
  bool enable_thinking = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      if (mpi.world().rank() == 0) print_eval_generate_usage(stdout);
      return 0;
    }
    if (generate::parse_model_flag("eval", args, i, flags)) continue;
    if (a == "--no-thinking") {
      enable_thinking = false;
      continue;
    }
    QFT_CHECK(a == "--generate" || a == "--extract" || a == "--output-dir" || a == "--batch-size",
              "eval: unknown option '{}' with --generate (see qft-dist eval --help)", a);
    QFT_CHECK(i + 1 < args.size(), "eval: {} needs a value (see qft-dist eval --help)", a);
    const std::string& v = args[++i];
    if (a == "--generate") set_path = v;
    else if (a == "--extract") rule_name = v;
    else if (a == "--output-dir") output_dir = v;
    else batch_size = parse_batch_size("eval", v);
  }
  const std::optional<text::AnswerRule> rule = text::parse_answer_rule(rule_name);
  QFT_CHECK(rule.has_value(), "eval: --extract '{}' is not one of last_number, boxed, exact, choice", rule_name);
  QFT_CHECK(!flags.model_dir.empty(), "eval: --generate needs --model DIR (see qft-dist eval --help)");
  QFT_CHECK(file_exists(set_path), "eval: --generate {}: no such file", set_path);
  QFT_CHECK(output_dir.empty() || !fs::exists(output_dir) || fs::is_directory(output_dir),
            "eval: --output-dir {}: exists and is not a directory", output_dir);
  // Generation is not split across ranks: the other ranks of a job have nothing to do.
  if (mpi.world().rank() != 0) return 0;
  if (mpi.world().size() > 1) spdlog::warn("eval --generate runs on rank 0 only; {} ranks idle", mpi.world().size() - 1);
  if (!flags.do_sample) flags.do_sample = false;  // greedy unless asked: scores must not depend on luck

  const std::vector<Item> items = read_items(set_path, *rule);
  const generate::LoadedModel model = generate::load_model("eval", flags);
  model.options(flags, 0);  // bad sampling flags fail before any work
  std::vector<std::vector<int32_t>> prompts;
  for (const Item& item : items) {
    nlohmann::ordered_json line = item.line;
    line.erase("answer");
    line.erase("id");
    prompts.push_back(prompt_ids_from_json(line, item.where, *model.tokenizer, enable_thinking));
  }

  std::vector<ModelScore> scores;
  {
    // The base: the same weights, decoded without the adapter.
    std::unique_ptr<generate::Decoder> base_decoder;
    generate::Decoder* decoder = model.decoder.get();
    if (model.lora) {
      base_decoder = std::make_unique<generate::Decoder>(model.config, *model.weights, nullptr);
      decoder = base_decoder.get();
    }
    scores.push_back(score("base", model, *decoder, flags, items, prompts, batch_size, *rule));
  }
  if (model.lora) scores.push_back(score("adapter", model, *model.decoder, flags, items, prompts, batch_size, *rule));

  std::printf("%-10s %9s %14s %12s %9s\n", "model", "accuracy", "correct/total", "mean tokens", "thinking");
  for (const ModelScore& s : scores) {
    std::printf("%-10s %8.1f%% %14s %12.1f %8.1f%%\n", s.name.c_str(), 100.0 * s.accuracy,
                fmt::format("{}/{}", s.correct, items.size()).c_str(), s.mean_tokens, 100.0 * s.thinking_share);
  }
  std::fflush(stdout);
  if (output_dir.empty()) return 0;

  std::string results;
  for (size_t i = 0; i < items.size(); ++i) {
    nlohmann::ordered_json row = {{"index", i}, {"id", items[i].id}, {"answer", items[i].answer}};
    for (const ModelScore& s : scores) {
      const Scored& r = s.rows[i];
      row[s.name] = {{"text", r.text},
                     {"extracted", r.extracted ? nlohmann::ordered_json(*r.extracted) : nlohmann::ordered_json()},
                     {"correct", r.correct},
                     {"used_thinking", r.used_thinking},
                     {"finish_reason", r.stopped ? "stop" : "length"},
                     {"completion_tokens", r.completion_tokens}};
    }
    results += row.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  nlohmann::ordered_json summary = {{"set", set_path},
                                    {"extract", text::answer_rule_name(*rule)},
                                    {"items", items.size()},
                                    {"model", flags.model_dir},
                                    {"adapter", flags.adapter_dir.empty() ? nlohmann::ordered_json()
                                                                          : nlohmann::ordered_json(flags.adapter_dir)},
                                    {"models", nlohmann::ordered_json::array()}};
  for (const ModelScore& s : scores) {
    summary["models"].push_back({{"name", s.name},
                                 {"accuracy", s.accuracy},
                                 {"correct", s.correct},
                                 {"total", items.size()},
                                 {"mean_generated_tokens", s.mean_tokens},
                                 {"thinking_share", s.thinking_share}});
  }
  // Everything is computed before the directory is touched: a failure above leaves nothing behind.
  fs::create_directories(output_dir);
  write_file_atomic((fs::path(output_dir) / "results.jsonl").string(), results);
  write_file_atomic((fs::path(output_dir) / "summary.json").string(), summary.dump(2) + "\n");
  return 0;
}

}  // namespace qft::cli
