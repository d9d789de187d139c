// qft-dist merge --base DIR --adapter DIR --output DIR [--dtype bf16|fp16|fp32] [--max-shard-size 5GB]
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "hf/merge.h"

namespace qft::cli {

namespace {

void print_merge_usage() {
  std::fprintf(stderr,
               "usage: qft-dist merge --base DIR --adapter DIR --output DIR [--dtype bf16|fp16|fp32]\n"
               "                      [--max-shard-size 5GB]\n\n"
               "Merges a PEFT LoRA adapter into its base model (W += scaling * B @ A in fp32) and writes a\n"
               "Hugging Face model directory; --dtype defaults to the base model's torch_dtype.\n");
}

}  // namespace

int cmd_merge(const Args& args) {
  hf::MergeOptions options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      print_merge_usage();
      return 0;
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
  hf::merge_adapter(options);
  return 0;
}

}  // namespace qft::cli
