// qft-dist: one binary, launched by MPI (a plain run is a world of one). The first argument is either
// a subcommand or a YAML config, which means `train`.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/config_reader.h"
#include "core/error.h"
#include "parallel/mpi_communicator.h"

#ifndef QFT_VERSION
#define QFT_VERSION "unknown"
#endif

namespace {

// A subcommand runs in one process (`run`) or on every rank of an MPI job (`run_in_job`: MPI is started
// only for those, so the one-process tools start fast and need no MPI environment).
struct Subcommand {
  const char* name;
  int (*run)(const qft::cli::Args&);
  int (*run_in_job)(const qft::cli::Args&, qft::parallel::MpiRuntime&);
  const char* summary;
};

const Subcommand kSubcommands[] = {
    {"train", nullptr, qft::cli::cmd_train, "train from a YAML config (also: qft-dist CONFIG.yaml)"},
    {"prepare", qft::cli::cmd_prepare, nullptr, "tokenize a data set into the HDF5 token cache"},
    {"tokenize", qft::cli::cmd_tokenize, nullptr, "encode/decode text with a tokenizer.json"},
    {"init-model", qft::cli::cmd_init_model, nullptr, "write a random-init Qwen3 model directory"},
    {"merge", qft::cli::cmd_merge, nullptr, "merge a PEFT LoRA adapter into its base model"},
    {"eval", nullptr, qft::cli::cmd_eval, "loss/perplexity on a config's data, or --generate: scored answers"},
    {"inspect", qft::cli::cmd_inspect, nullptr, "summarise a model dir, adapter, safetensors file or token cache"},
    {"plot", qft::cli::cmd_plot, nullptr, "(re)draw a run's report.html from its trainer_log.jsonl"},
    {"chat", qft::cli::cmd_chat, nullptr, "interactive chat with a model (+ adapter), streaming"},
    {"generate", qft::cli::cmd_generate, nullptr, "answer a JSONL of prompts in batches"},
    {"template", qft::cli::cmd_template, nullptr, "show one data record as the model sees it: template, targets, tokens"},
};

// --help prints to stdout (it is the answer asked for); a usage error prints to stderr.
void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: qft-dist CONFIG.yaml [--override section.key=value ...]\n"
                    "       qft-dist SUBCOMMAND [args]\n       qft-dist --version\n\nsubcommands:\n");
  for (const auto& s : kSubcommands) std::fprintf(out, "  %-11s %s\n", s.name, s.summary);
  std::fprintf(out, "\nRun `qft-dist SUBCOMMAND --help` for its options; docs/CONFIG.md lists every config key.\n");
}

// Logs what escaped a subcommand; returns the exit code.
int report_failure() {
  try {
    throw;
  } catch (const qft::Error& e) {
    spdlog::error("{}", e.what());
  } catch (const c10::OutOfMemoryError& e) {
    // torch's first sentences say what was asked for and what was free; the rest is allocator advice.
    std::string what = e.what();
    what = what.substr(0, std::min(what.find('\n'), what.find(" Including non-PyTorch")));
    spdlog::error("out of GPU memory: {} Lower training.per_device_train_batch_size or the sequence length, set "
                  "training.gradient_checkpointing: true, or shard more (distributed.zero_stage, "
                  "distributed.tensor_parallel_size, more GPUs; docs/DISTRIBUTED.md has the memory per stage)",
                  what);
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
  }
  return 1;
}

int run_subcommand(const Subcommand& s, const qft::cli::Args& args) {
  if (s.run != nullptr) return s.run(args);
  qft::parallel::MpiRuntime mpi;
  try {
    return s.run_in_job(args, mpi);
  } catch (...) {
    const int code = report_failure();
    // While MPI is still up (mpi's destructor finalises it): other ranks may be waiting in a collective.
    qft::parallel::MpiRuntime::abort_job_if_distributed(code);
    return code;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Logs go to stderr so that stdout carries only results (eval's JSON, inspect's listing).
  spdlog::set_default_logger(spdlog::stderr_color_mt("qft"));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  if (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    print_usage(stdout);
    return 0;
  }
  if (!std::strcmp(argv[1], "--version") || !std::strcmp(argv[1], "-V")) {
    std::printf("qft-dist %s\n", QFT_VERSION);
    return 0;
  }
  const std::string first = argv[1];
  qft::cli::Args rest(argv + 2, argv + argc);
  try {
    for (const auto& s : kSubcommands) {
      if (first == s.name) return run_subcommand(s, rest);
    }
    auto ends_with = [&](const std::string& suffix) {
      return first.size() > suffix.size() && first.compare(first.size() - suffix.size(), suffix.size(), suffix) == 0;
    };
    const bool looks_like_config = ends_with(".yaml") || ends_with(".yml");
    if (looks_like_config) {
      rest.insert(rest.begin(), first);
      return run_subcommand(kSubcommands[0], rest);
    }
    std::vector<std::string> names;
    for (const auto& s : kSubcommands) names.push_back(s.name);
    const std::string guess = qft::closest_match(first, names);
    if (!guess.empty()) {
      std::fprintf(stderr, "qft-dist: unknown subcommand '%s' (did you mean '%s'?)\n\n", first.c_str(), guess.c_str());
    } else {
      std::fprintf(stderr, "qft-dist: unknown subcommand '%s' (and not a .yaml config)\n\n", first.c_str());
    }
    print_usage(stderr);
    return 2;
  } catch (...) {
    return report_failure();
  }
}
