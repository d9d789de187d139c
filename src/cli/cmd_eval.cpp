#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "train/evaluate.h"
#include "train/train_config.h"

namespace qft::cli {
namespace {

// --help prints to stdout; a usage error to stderr.
void print_eval_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist eval CONFIG.yaml [--adapter DIR] [--override section.key=value ...]\n\n"
               "Mean token loss and perplexity of model.model_name_or_path (with the PEFT adapter of --adapter,\n"
               "else lora.adapter_name_or_path, else none) over the config's data, with the training masks.\n"
               "Prints one JSON object: loss, perplexity, rows, target_tokens, input_tokens.\n\n"
               "With --generate SET.jsonl instead of a config, the answers of the model (and of the model +\n"
               "adapter) are generated and scored against references:\n\n");
  print_eval_generate_usage(out);
}

}  // namespace

int cmd_eval(const Args& args, parallel::MpiRuntime& mpi) {
  for (const std::string& a : args)
    if (a == "--generate") return cmd_eval_generate(args, mpi);
  std::string config_path, adapter;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_eval_usage(stdout);
      return 0;
    }
    if (a == "--adapter" || a == "--override") {
      QFT_CHECK(i + 1 < args.size(), "eval: {} needs a value (see qft-dist eval --help)", a);
      const std::string& value = args[++i];
      if (a == "--adapter") adapter = value;
      else overrides.push_back(value);
    } else if (a.rfind("--", 0) == 0) {
      fail("eval: unknown option '{}' (see qft-dist eval --help)", a);
    } else {
      QFT_CHECK(config_path.empty(), "eval: more than one config given ('{}' and '{}')", config_path, a);
      config_path = a;
    }
  }
  if (config_path.empty()) {
    print_eval_usage(stderr);
    return 2;
  }
  // Before the data is loaded and tokenized: a wrong --adapter is a typo, not a reason to wait.
  QFT_CHECK(adapter.empty() || std::filesystem::exists(std::filesystem::path(adapter) / "adapter_config.json"),
            "eval: --adapter {}: {} (expected a PEFT adapter directory)", adapter,
            std::filesystem::is_directory(adapter) ? "has no adapter_config.json" : "does not exist");
  const train::EvalResult r =
      train::evaluate(train::load_train_config(config_path, overrides), adapter, mpi.world(), mpi.local_rank());
  if (mpi.world().rank() == 0) {
    const nlohmann::json j = {{"loss", r.loss},
                              {"perplexity", r.perplexity},
                              {"rows", r.rows},
                              {"target_tokens", r.target_tokens},
                              {"input_tokens", r.input_tokens}};
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}

}  // namespace qft::cli
