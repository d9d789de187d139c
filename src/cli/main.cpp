// qft-dist: one binary, launched by MPI (a plain run is a world of one). The first argument is either
// a subcommand or a YAML config, which means `train`.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "dist/world.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(const qft::cli::Args&);
  const char* summary;
};

const Subcommand kSubcommands[] = {
    {"train", qft::cli::cmd_train, "train from a YAML config (also: qft-dist CONFIG.yaml)"},
    {"prepare", qft::cli::cmd_prepare, "tokenize a data set into the HDF5 token cache"},
    {"tokenize", qft::cli::cmd_tokenize, "encode/decode text with a tokenizer.json"},
    {"init-model", qft::cli::cmd_init_model, "write a random-init Qwen3 model directory"},
    {"merge", qft::cli::cmd_merge, "merge a PEFT LoRA adapter into its base model"},
    {"eval", qft::cli::cmd_eval, "loss and perplexity of a model (+ adapter) on a config's data"},
    {"inspect", qft::cli::cmd_inspect, "summarise a model dir, adapter, safetensors file or token cache"},
    {"template", qft::cli::cmd_template, "show one data record as the model sees it: template, targets, tokens"},
};

void print_usage() {
  std::fprintf(stderr, "usage: qft-dist CONFIG.yaml\n       qft-dist SUBCOMMAND [args]\n\nsubcommands:\n");
  for (const auto& s : kSubcommands) std::fprintf(stderr, "  %-11s %s\n", s.name, s.summary);
  std::fprintf(stderr, "\nRun `qft-dist SUBCOMMAND --help` for its options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr so that stdout carries only results (eval's JSON, inspect's listing).
  spdlog::set_default_logger(spdlog::stderr_color_mt("qft"));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  const std::string first = argv[1];
  qft::cli::Args rest(argv + 2, argv + argc);
  try {
    for (const auto& s : kSubcommands) {
      if (first == s.name) return s.run(rest);
    }
    auto ends_with = [&](const std::string& suffix) {
      return first.size() > suffix.size() && first.compare(first.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool looks_like_config = ends_with(".yaml") || ends_with(".yml");
    if (looks_like_config) {
      rest.insert(rest.begin(), first);
      return qft::cli::cmd_train(rest);
    }
    std::fprintf(stderr, "qft-dist: unknown subcommand '%s' (and not a .yaml config)\n\n", first.c_str());
    print_usage();
    return 2;
  } catch (const qft::Error& e) {
    spdlog::error("{}", e.what());
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
  }
  qft::dist::World::abort_job_if_distributed(1);
  return 1;
}
