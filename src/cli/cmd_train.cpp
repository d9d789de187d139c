// qft-dist CONFIG.yaml [--override section.key=value ...]
// qft-dist train CONFIG.yaml [--override section.key=value ...]
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/error.h"
#include "train/train_config.h"
#include "train/trainer.h"

namespace qft::cli {

namespace {

// --help prints to stdout; a usage error to stderr.
void print_train_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist CONFIG.yaml [--check] [--override section.key=value ...]\n"
               "       qft-dist train CONFIG.yaml [--check] [--override section.key=value ...]\n\n"
               "Trains as the YAML config says (docs/CONFIG.md lists every key). An override replaces one\n"
               "key before validation, e.g. --override training.learning_rate=1e-4 --override\n"
               "lora.target_modules=[q_proj,v_proj]. Launch with mpirun -np N for data parallelism.\n\n"
               "  --check   validate the config (and the model/data paths it names), print it as the run would\n"
               "            use it (defaults filled in, as output_dir/qft_config.yaml), and exit without training\n");
}

}  // namespace

int cmd_train(const Args& args, parallel::MpiRuntime& mpi) {
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_train_usage(stdout);
      return 0;
    }
    if (a == "--check") {
      check_only = true;
    } else if (a == "--override") {
      QFT_CHECK(i + 1 < args.size(), "train: --override needs a section.key=value argument");
      overrides.push_back(args[++i]);
    } else if (a.rfind("--override=", 0) == 0) {
      overrides.push_back(a.substr(11));
    } else if (config_path.empty() && a.rfind("--", 0) != 0) {
      config_path = a;
    } else {
      fail("train: unexpected argument '{}' (see qft-dist train --help)", a);
    }
  }
  if (config_path.empty()) {
    print_train_usage(stderr);
    return 2;
  }
  const train::TrainConfig config = train::load_train_config(config_path, overrides);
  if (check_only) {
    std::printf("%s", config.resolved_yaml().c_str());
    return 0;
  }
  train::run_training(config, mpi.world(), mpi.local_rank());
  return 0;
}

}  // namespace qft::cli
