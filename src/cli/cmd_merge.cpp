// qft-dist merge --base DIR --adapter DIR --output DIR [--dtype bf16|fp16|fp32] [--max-shard-size 5GB] [--force]
// [--load-in-4bit] [--save-4bit] [--no-double-quant]
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "core/config_key_hints.h"
#include "core/error.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/merge.h"

namespace qft::cli {

namespace {

// --help prints to stdout; a usage error to stderr.
void print_merge_usage(std::FILE* out) {
  std::fprintf(out,
               "usage: qft-dist merge --base DIR --adapter DIR --output DIR [--dtype bf16|fp16|fp32]\n"
               "                      [--max-shard-size 5GB] [--force] [--load-in-4bit] [--save-4bit]\n"
               "                      [--no-double-quant]\n\n"
               "Merges a PEFT LoRA adapter into its base model (W += scaling * B @ A in fp32) and writes a\n"
               "Hugging Face model directory with the base's tokenizer, chat template and generation files;\n"
               "--dtype defaults to the base model's torch_dtype. --force replaces an existing output model\n"
               "directory: the new one is written beside it and swapped in only when complete.\n\n"
               "QLoRA: a 4-bit base (a bitsandbytes *-bnb-4bit directory) is dequantized before merging, as\n"
               "PEFT's merge_and_unload does. --load-in-4bit quantizes a dense base to NF4 first, as a run\n"
               "with model.load_in_4bit: true trained against it. --save-4bit writes the merged model with\n"
               "NF4 projections in bitsandbytes' layout and its quantization_config (transformers +\n"
               "bitsandbytes and qft load it 4-bit). --no-double-quant: plain fp32 absmax for both.\n");
}

}  // namespace

int cmd_merge(const Args& args) {
  hf::MergeOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_merge_usage(stdout);
      return 0;
    }
    if (a == "--force" || a == "--load-in-4bit" || a == "--save-4bit" || a == "--no-double-quant") {
      bool& flag = a == "--force" ? options.force
                   : a == "--load-in-4bit" ? options.load_in_4bit
                   : a == "--save-4bit" ? options.save_4bit
                                        : options.double_quant;
      flag = a != "--no-double-quant";
      continue;
    }
    QFT_CHECK(i + 1 < args.size(), "merge: {} needs a value (see qft-dist merge --help)", a);
    const std::string& value = args[++i];
    if (a == "--base") options.base_dir = value;
    else if (a == "--adapter") options.adapter_dir = value;
    else if (a == "--output") options.output_dir = value;
    else if (a == "--dtype") options.dtype = hf::parse_dtype(value, "merge --dtype");
    else if (a == "--max-shard-size") options.max_shard_bytes = hf::parse_byte_size(value, "merge --max-shard-size");
    else fail("merge: unknown option '{}' (see qft-dist merge --help)", a);
  }
  QFT_CHECK(!options.base_dir.empty() && !options.adapter_dir.empty() && !options.output_dir.empty(),
            "merge: --base, --adapter and --output are required (see qft-dist merge --help)");
  for (const std::string* input : {&options.base_dir, &options.adapter_dir}) {
    if (!std::filesystem::exists(*input) && !hub_id_hint(*input).empty()) fail("merge: {}", hub_id_hint(*input));
  }
  // "merged/" and "merged" name the same directory; the temporary sibling is built from the last component.
  while (options.output_dir.size() > 1 && options.output_dir.back() == '/') options.output_dir.pop_back();
  hf::merge_adapter(options);
  return 0;
}

}  // namespace qft::cli
