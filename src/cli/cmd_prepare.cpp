// qft-dist prepare CONFIG.yaml [--tokenizer PATH] [--force]
// qft-dist prepare --write-demo-data DIR
// Tokenizes the `data:` section's data sets into the HDF5 token cache and prints what happened.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands.h"
#include "core/config_reader.h"
#include "core/error.h"
#include "data/data_config.h"
#include "data/demo_data.h"
#include "data/prepare.h"
#include "train/train_config.h"

namespace qft::cli {

namespace {

// --help prints to stdout; a usage error to stderr.
void print_help(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist prepare CONFIG.yaml [--tokenizer PATH] [--force] [--override section.key=value ...]\n"
               "       qft-dist prepare --write-demo-data DIR\n\n"
               "Reads the data: section of CONFIG.yaml (docs/DATA.md), renders, tokenizes, masks, mixes and\n"
               "writes the token cache to data.cache_dir. The tokenizer is --tokenizer, else data.tokenizer,\n"
               "else model.model_name_or_path (a directory holding tokenizer.json).\n\n"
               "  --tokenizer PATH        tokenizer.json or a directory holding one\n"
               "  --force                 rebuild the cache even if an up-to-date one exists\n"
               "  --override KEY=VALUE    replace one config key before reading it, as for train and eval\n"
               "                          (e.g. --override data.max_seq_length=1024)\n"
               "  --write-demo-data DIR   write the README demo data set (generated) into DIR and exit\n");
}

}  // namespace

int cmd_prepare(const Args& args) {
  std::string config_path, tokenizer, demo_dir;
  bool force = false;
  std::vector<std::string> overrides;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const auto value = [&](const char* flag) -> std::string {
      QFT_CHECK(i + 1 < args.size(), "prepare: {} needs a value", flag);
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      print_help(stdout);
      return 0;
    } else if (arg == "--tokenizer") {
      tokenizer = value("--tokenizer");
    } else if (arg == "--override") {
      overrides.push_back(value("--override"));
    } else if (arg.rfind("--override=", 0) == 0) {
      overrides.push_back(arg.substr(11));
    } else if (arg == "--force") {
      force = true;
    } else if (arg == "--write-demo-data") {
      demo_dir = value("--write-demo-data");
    } else if (!arg.empty() && arg[0] == '-') {
      fail("prepare: unknown option '{}' (see qft-dist prepare --help)", arg);
    } else {
      QFT_CHECK(config_path.empty(), "prepare: one config file expected, got '{}' and '{}'", config_path, arg);
      config_path = arg;
    }
  }

  if (!demo_dir.empty()) {
    for (const std::string& path : data::write_demo_dataset(demo_dir)) std::printf("wrote %s\n", path.c_str());
    return 0;
  }
  if (config_path.empty()) {
    print_help(stderr);
    return 2;
  }

  YAML::Node root = load_yaml_file(config_path);
  QFT_CHECK(root.IsMap(), "{}: the config must be a mapping with a data: section", config_path);
  for (const auto& o : overrides) train::apply_override(root, o);
  ConfigReader top(root, config_path);
  QFT_CHECK(top.has("data"), "{}: no data: section", config_path);
  ConfigReader data_section = top.section("data");
  data::DataConfig config = data::read_data_config(data_section);
  data_section.finish();
  if (tokenizer.empty() && config.tokenizer.empty()) {
    tokenizer = top.section("model").get_string("model_name_or_path", "");
  }

  const data::PrepareReport report = data::prepare_dataset(config, tokenizer, force);
  std::printf("token cache: %s%s\n", report.cache_path.c_str(), report.reused ? " (up to date, reused)" : "");
  for (const auto& d : report.datasets) {
    std::printf("  %s: format %s, %lld records, %lld usable, %lld in the mixture\n", d.path.c_str(), d.format.c_str(),
                static_cast<long long>(d.records), static_cast<long long>(d.usable), static_cast<long long>(d.selected));
  }
  std::printf("samples: %lld  tokens: %lld  target tokens: %lld  truncated: %lld  text chunks: %lld\n",
              static_cast<long long>(report.samples), static_cast<long long>(report.tokens),
              static_cast<long long>(report.target_tokens), static_cast<long long>(report.truncated),
              static_cast<long long>(report.text_chunks));
  for (const auto& [reason, count] : report.skipped) std::printf("skipped (%s): %lld\n", reason.c_str(), static_cast<long long>(count));
  return 0;
}

}  // namespace qft::cli
