// qft-dist init-model --preset NAME | --config FILE.json --output DIR [--seed N] [--dtype bf16|fp32]
//                     [--tokenizer DIR] [--max-shard-size 5GB] [--save-4bit [--no-double-quant]]
//                     [--device cpu|cuda]
#include <cstdio>
#include <string>

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "core/error.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/init_model.h"

namespace qft::cli {

namespace {

// --help prints to stdout; a usage error to stderr.
void print_init_model_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist init-model (--preset NAME | --config FILE.json) --output DIR [--seed N]\n"
               "                           [--dtype bf16|fp16|fp32] [--tokenizer DIR] [--max-shard-size 5GB]\n"
               "                           [--initializer-range STD] [--save-4bit [--no-double-quant]]\n"
               "                           [--device cpu|cuda]\n\n"
               "Writes a random-init Hugging Face Qwen3 model directory (config.json + safetensors).\n"
               "--save-4bit writes the projections NF4 4-bit in bitsandbytes' layout with their\n"
               "quantization_config, as merge --save-4bit (a QLoRA base that qft and transformers +\n"
               "bitsandbytes load 4-bit): the --dtype model of the same seed, quantized, generated one\n"
               "tensor at a time so that neither memory nor disk ever holds the dense model.\n"
               "--no-double-quant: plain fp32 absmax (bnb_4bit_use_double_quant false).\n"
               "--device cuda (or cuda:N): draw each tensor on the GPU with torch's CUDA generator (and\n"
               "quantize it there with --save-4bit); only the results come to the host to be written.\n"
               "Deterministic per --seed, but NOT the values of --device cpu (the default), whose CPU\n"
               "generator is the one every other init-model run and test uses.\n"
               "presets: %s\n",
               fmt::format("{}", fmt::join(hf::init_model_preset_names(), ", ")).c_str());
}

}  // namespace

int cmd_init_model(const Args& args) {
  std::string preset, config_file, output, tokenizer, dtype = "bf16", shard = "5GB", device = "cpu";
  uint64_t seed = 0;
  double initializer_range = 0.02;  // transformers' Qwen3 default
  bool save_4bit = false, double_quant = true;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_init_model_usage(stdout);
      return 0;
    }
    if (a == "--save-4bit" || a == "--no-double-quant") {
      (a == "--save-4bit" ? save_4bit : double_quant) = a == "--save-4bit";
      continue;
    }
    QFT_CHECK(i + 1 < args.size(), "init-model: {} needs a value (see qft-dist init-model --help)", a);
    const std::string& value = args[++i];
    if (a == "--preset") preset = value;
    else if (a == "--config") config_file = value;
    else if (a == "--output") output = value;
    else if (a == "--tokenizer") tokenizer = value;
    else if (a == "--dtype") dtype = value;
    else if (a == "--max-shard-size") shard = value;
    else if (a == "--device") device = value;
    else if (a == "--initializer-range") {
      try {
        size_t used = 0;
        initializer_range = std::stod(value, &used);
        QFT_CHECK(used == value.size() && initializer_range > 0, "");
      } catch (const std::exception&) {
        fail("init-model: --initializer-range '{}' is not a positive number", value);
      }
    }
    else if (a == "--seed") {
      try {
        size_t used = 0;
        QFT_CHECK(!value.empty() && value[0] != '-', "");  // stoull would wrap "-1" around
        seed = std::stoull(value, &used);
        QFT_CHECK(used == value.size(), "");
      } catch (const std::exception&) {
        fail("init-model: --seed '{}' is not a non-negative integer", value);
      }
    } else {
      fail("init-model: unknown option '{}' (see qft-dist init-model --help)", a);
    }
  }
  QFT_CHECK(preset.empty() != config_file.empty(), "init-model: give exactly one of --preset NAME or --config FILE");
  QFT_CHECK(!output.empty(), "init-model: --output DIR is required");
  QFT_CHECK(save_4bit || double_quant, "init-model: --no-double-quant applies to --save-4bit only");
  hf::InitModelOptions options;
  options.config = preset.empty() ? model::Qwen3Config::from_file(config_file) : hf::init_model_preset(preset);
  options.output_dir = output;
  options.seed = seed;
  options.initializer_range = initializer_range;
  options.dtype = hf::parse_dtype(dtype, "init-model --dtype");
  options.tokenizer_dir = tokenizer;
  options.max_shard_bytes = hf::parse_byte_size(shard, "init-model --max-shard-size");
  options.save_4bit = save_4bit;
  options.double_quant = double_quant;
  // at::Device accepts every torch device type; init_model refuses all but cpu and an available cuda.
  try {
    options.device = at::Device(device);
  } catch (const std::exception&) {
    fail("init-model: --device '{}' is not cpu, cuda or cuda:N", device);
  }
  hf::init_model(options);
  if (tokenizer.empty()) {
    spdlog::warn("init-model: {} has no tokenizer files, and training and prepare need one: rerun with --tokenizer "
                 "DIR (a directory holding tokenizer.json and tokenizer_config.json, e.g. a downloaded Qwen3 model), "
                 "copy those files into {}, or set data.tokenizer in the training config",
                 output, output);
  }
  return 0;
}

}  // namespace qft::cli
