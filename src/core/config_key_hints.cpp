#include "core/config_key_hints.h"

#include <map>
#include <vector>

#include "core/error.h"

namespace qft {

namespace {

const char* const kSections[] = {"model", "lora", "data", "training", "output"};

// The keys of each train-config section (docs/CONFIG.md), for "this key belongs in section X".
const std::map<std::string, std::vector<std::string>>& section_keys() {
  static const std::map<std::string, std::vector<std::string>> keys = {
      {"model", {"model_name_or_path", "torch_dtype", "device"}},
      {"lora",
       {"finetuning_type", "r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "init_lora_weights",
        "adapter_name_or_path"}},
      {"data",
       {"datasets", "pretokenized", "num_samples", "max_seq_length", "truncation", "train_on_prompt", "mask_history",
        "packing", "enable_thinking", "strict", "seed", "cache_dir", "tokenizer", "preprocessing_num_workers"}},
      {"training",
       {"learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
        "lr_scheduler_type", "warmup_steps", "warmup_ratio", "per_device_train_batch_size",
        "gradient_accumulation_steps", "max_steps", "num_train_epochs", "logging_steps", "save_steps", "seed",
        "shuffle", "dataloader_drop_last", "gradient_checkpointing", "recompute_granularity", "use_fused_kernels", "loss_chunk_tokens",
        "tiled_mlp", "tiled_mlp_num_shards", "activation_offloading", "activation_offloading_layers",
        "resume_from_checkpoint"}},
      {"output", {"output_dir", "overwrite_output_dir", "save_total_limit", "report_to"}},
  };
  return keys;
}

struct ForeignKey {
  const char* origin;  // which trainer uses the name
  const char* qft;     // the qft key path, or "" when qft has no such key
  const char* advice;  // what to write instead (may be "")
};

// Names from LLaMA-Factory (hparams/*_args.py), TRL (SFTConfig, ScriptArguments/ModelConfig) and axolotl.
const std::map<std::string, ForeignKey>& foreign_keys() {
  static const std::map<std::string, ForeignKey> keys = {
      {"lora_rank", {"LLaMA-Factory", "lora.r", ""}},
      {"lora_r", {"TRL/axolotl", "lora.r", ""}},
      {"rank", {"", "lora.r", ""}},
      {"lora_target", {"LLaMA-Factory", "lora.target_modules", "a list such as [q_proj, v_proj] or all-linear"}},
      {"lora_target_modules", {"TRL/axolotl", "lora.target_modules", ""}},
      {"use_peft", {"TRL", "lora.finetuning_type", "lora (the default) or full"}},
      {"cutoff_len", {"LLaMA-Factory", "data.max_seq_length", ""}},
      {"max_length", {"TRL", "data.max_seq_length", ""}},
      {"sequence_len", {"axolotl", "data.max_seq_length", ""}},
      {"sample_packing", {"axolotl", "data.packing", ""}},
      {"dataset", {"LLaMA-Factory/TRL", "data.datasets", "a list of {path: FILE.jsonl} entries (docs/DATA.md)"}},
      {"dataset_name", {"TRL", "data.datasets", "a list of {path: FILE.jsonl} entries; qft reads local files"}},
      {"dataset_dir", {"LLaMA-Factory", "data.datasets", "give each file's path in data.datasets"}},
      {"template", {"LLaMA-Factory", "", "remove it: qft renders the Qwen3 chat template itself"}},
      {"stage", {"LLaMA-Factory", "", "remove it: qft does supervised fine-tuning"}},
      {"do_train", {"LLaMA-Factory/HF", "", "remove it: `qft-dist CONFIG.yaml` trains"}},
      {"bf16", {"HF TrainingArguments", "model.torch_dtype", "bf16"}},
      {"fp16", {"HF TrainingArguments", "model.torch_dtype", "fp16"}},
      {"num_epochs", {"", "training.num_train_epochs", ""}},
      {"epochs", {"", "training.num_train_epochs", ""}},
      {"lr", {"", "training.learning_rate", ""}},
      {"lr_scheduler", {"axolotl", "training.lr_scheduler_type", ""}},
      {"batch_size", {"", "training.per_device_train_batch_size", ""}},
      {"micro_batch_size", {"axolotl", "training.per_device_train_batch_size", ""}},
      {"base_model", {"axolotl", "model.model_name_or_path", ""}},
      {"plot_loss", {"LLaMA-Factory", "", "remove it: qft always writes output_dir/report.html"}},
      {"overwrite_cache", {"LLaMA-Factory", "", "remove it: run `qft-dist prepare CONFIG.yaml --force`"}},
      {"logging_dir", {"HF TrainingArguments", "", "remove it: TensorBoard events go to output_dir/runs"}},
  };
  return keys;
}

bool section_has(const std::string& section, const std::string& key) {
  const auto it = section_keys().find(section);
  if (it == section_keys().end()) return false;
  for (const auto& k : it->second) {
    if (k == key) return true;
  }
  return false;
}

// The section a key belongs to; training before data, so `seed` at the top level points to training.seed.
std::string section_of(const std::string& key) {
  for (const char* section : {"model", "lora", "training", "output", "data"}) {
    if (section_has(section, key)) return section;
  }
  return "";
}

}  // namespace

std::string config_key_hint(const std::string& section, const std::string& key) {
  const bool top = section.empty();
  const bool known_section = top || section_keys().count(section) > 0;
  if (!known_section) return "";  // e.g. data.datasets[0]: its own keys, its own suggestions
  if (section_has(section, key)) return "";  // read by the section itself (e.g. data.seed and training.seed)
  const std::string owner = section_of(key);
  if (!owner.empty()) {
    if (top) {
      return "qft's config is nested in the sections model, lora, data, training and output; '" + key +
             "' goes under " + owner + ": (" + owner + "." + key + ")";
    }
    return "'" + key + "' belongs in the " + owner + " section: write it as " + owner + "." + key;
  }
  const auto it = foreign_keys().find(key);
  if (it == foreign_keys().end()) return "";
  const ForeignKey& f = it->second;
  std::string hint = std::string(*f.origin ? f.origin : "another trainer") + "'s '" + key + "'";
  if (*f.qft) {
    hint += " is qft's '" + std::string(f.qft) + "'";
    if (*f.advice) hint += std::string(" (") + f.advice + ")";
  } else {
    hint += " has no qft equivalent: " + std::string(f.advice);
  }
  return hint;
}

std::string hub_id_hint(const std::string& path) {
  // owner/name: one slash, neither part empty, no leading '.' or '/', only characters the Hub allows.
  const size_t slash = path.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 >= path.size() || path.find('/', slash + 1) != std::string::npos ||
      path[0] == '.' || path[0] == '~') {
    return "";
  }
  for (char c : path) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || c == '/';
    if (!ok) return "";
  }
  const std::string name = path.substr(slash + 1);
  return "'" + path + "' looks like a Hugging Face Hub id, but qft reads local model directories only; download it "
         "once with `huggingface-cli download " + path + " --local-dir models/" + name + "` and use models/" + name;
}

void check_top_level_key_hints(const YAML::Node& root, const std::string& file) {
  if (!root.IsMap()) return;
  for (const auto& kv : root) {
    if (!kv.first.IsScalar()) continue;
    const std::string key = kv.first.Scalar();
    bool is_section = false;
    for (const char* s : kSections) is_section = is_section || key == s;
    if (is_section) continue;
    const std::string hint = config_key_hint("", key);
    if (!hint.empty()) fail("{}:{}: unknown key '{}': {}", file, kv.first.Mark().line + 1, key, hint);
  }
}

}  // namespace qft
