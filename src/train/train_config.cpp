#include "train/train_config.h"

#include <cmath>

#include "core/fnv1a.h"
#include "data/prepare.h"

#include <filesystem>

#include "core/config_key_hints.h"
#include "core/error.h"
#include "core/files.h"
#include "model/lora_targets.h"

namespace qft::train {

namespace {

namespace fs = std::filesystem;

// Accepts the short names and the torch names HF configs use; returns the short name.
std::string read_dtype(ConfigReader& section, const std::string& key, const std::string& fallback) {
  const std::string value = section.get_choice(
      key, {"auto", "bf16", "fp16", "fp32", "bfloat16", "float16", "float32"}, fallback);
  if (value == "bfloat16") return "bf16";
  if (value == "float16") return "fp16";
  if (value == "float32") return "fp32";
  return value;
}

// `check` false -> "file:line: 'key path' must be <requirement>, got <value>".
template <typename T>
void require(bool check, const ConfigReader& section, const std::string& key, const char* requirement, T value) {
  if (!check) fail("{} must be {}, got {}", section.where(key), requirement, value);
}

// load_in_4bit and its bnb_4bit_* keys (docs/CONFIG.md § model).
void read_4bit_keys(ConfigReader& section, ModelOptions& model) {
  model.load_in_4bit = section.get_bool("load_in_4bit", false);
  if (!model.load_in_4bit) {
    for (const char* key : {"bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype"}) {
      section.raw(key);  // known, for suggestions
      QFT_CHECK(!section.has(key), "{} only applies with model.load_in_4bit: true (QLoRA)", section.where(key));
    }
    return;
  }
  model.bnb_4bit_quant_type = section.get_choice("bnb_4bit_quant_type", {"nf4", "fp4"}, model.bnb_4bit_quant_type);
  QFT_CHECK(model.bnb_4bit_quant_type == "nf4",
            "{}: fp4 is not supported; qft quantizes to NF4 (QLoRA's 4-bit NormalFloat): set bnb_4bit_quant_type: nf4",
            section.where("bnb_4bit_quant_type"));
  model.bnb_4bit_use_double_quant = section.get_bool("bnb_4bit_use_double_quant", model.bnb_4bit_use_double_quant);
  model.bnb_4bit_compute_dtype = read_dtype(section, "bnb_4bit_compute_dtype", model.bnb_4bit_compute_dtype);
  QFT_CHECK(model.bnb_4bit_compute_dtype == "auto" || model.bnb_4bit_compute_dtype == model.torch_dtype,
            "{} must equal model.torch_dtype ({}), got {}: qft computes the whole model in one dtype, so set "
            "torch_dtype: {} instead (or leave bnb_4bit_compute_dtype out)",
            section.where("bnb_4bit_compute_dtype"), model.torch_dtype, model.bnb_4bit_compute_dtype,
            model.bnb_4bit_compute_dtype);
}

ModelOptions read_model_section(ConfigReader section) {
  ModelOptions model;
  model.model_name_or_path = section.get_string("model_name_or_path");
  const fs::path dir(model.model_name_or_path);
  std::error_code ec;  // the non-throwing overloads: a path too long or unreadable is "does not exist"
  if (!fs::exists(dir, ec) && !hub_id_hint(model.model_name_or_path).empty()) {
    fail("{}: {}", section.where("model_name_or_path"), hub_id_hint(model.model_name_or_path));
  }
  QFT_CHECK(fs::is_directory(dir, ec), "{}: directory '{}' does not exist (expected a Hugging Face model directory)",
            section.where("model_name_or_path"), model.model_name_or_path);
  QFT_CHECK(fs::exists(dir / "config.json", ec), "{}: '{}' has no config.json (expected a Hugging Face model directory)",
            section.where("model_name_or_path"), model.model_name_or_path);
  model.torch_dtype = read_dtype(section, "torch_dtype", model.torch_dtype);
  model.device = section.get_choice("device", {"auto", "cpu", "cuda"}, model.device);
  read_4bit_keys(section, model);
  section.finish();
  return model;
}

std::string read_init_lora_weights(ConfigReader& section) {
  if (!section.has("init_lora_weights")) {
    section.raw("init_lora_weights");  // marks the key as known for suggestions
    return "true";
  }
  const YAML::Node node = section.raw("init_lora_weights");
  const std::string value = node.IsScalar() ? node.Scalar() : "";
  if (value == "true" || value == "True") return "true";
  if (value == "gaussian") return "gaussian";
  fail("{} must be true (kaiming-uniform A, as PEFT) or gaussian (A ~ N(0, 1/r)); got '{}' "
       "(PEFT's other init schemes are not supported)",
       section.where("init_lora_weights"), value);
}

// The `lora` section: the fine-tuning method and the adapter keys.
LoraOptions read_lora_section(ConfigReader section, FinetuningType& finetuning_type) {
  LoraOptions lora;
  const std::string type = section.get_choice("finetuning_type", {"lora", "full"}, "lora");
  finetuning_type = type == "full" ? FinetuningType::full : FinetuningType::lora;
  lora.r = section.get_int("r", lora.r);
  require(lora.r >= 1, section, "r", "a positive integer", lora.r);
  lora.lora_alpha = section.get_double("lora_alpha", lora.lora_alpha);
  require(lora.lora_alpha > 0, section, "lora_alpha", "positive", lora.lora_alpha);
  lora.lora_dropout = section.get_double("lora_dropout", lora.lora_dropout);
  require(lora.lora_dropout >= 0 && lora.lora_dropout < 1, section, "lora_dropout", "in [0, 1)", lora.lora_dropout);
  lora.target_modules = section.get_string_list("target_modules", lora.target_modules);
  try {
    model::validate_target_modules_spec(lora.target_modules);
  } catch (const Error& e) {
    fail("{}: {}", section.where("target_modules"), e.what());
  }
  lora.use_rslora = section.get_bool("use_rslora", lora.use_rslora);
  lora.init_lora_weights = read_init_lora_weights(section);
  lora.adapter_name_or_path = section.get_string("adapter_name_or_path", "");
  if (!lora.adapter_name_or_path.empty()) {
    QFT_CHECK(finetuning_type == FinetuningType::lora, "{}: an adapter can only be continued with finetuning_type: lora",
              section.where("adapter_name_or_path"));
    std::error_code ec;
    QFT_CHECK(fs::exists(fs::path(lora.adapter_name_or_path) / "adapter_config.json", ec),
              "{}: '{}' has no adapter_config.json (expected a PEFT adapter directory)",
              section.where("adapter_name_or_path"), lora.adapter_name_or_path);
  }
  section.finish();
  return lora;
}

// training.profile_steps: [first, last], two optimizer steps (1-based, as logged) with first <= last.
std::array<int64_t, 2> read_profile_steps(ConfigReader& section) {
  const YAML::Node node = section.raw("profile_steps");
  if (!node.IsDefined()) return {0, 0};
  auto bad = [&](const std::string& problem) {
    fail("{}: {}; expected [first, last]: two optimizer steps with 1 <= first <= last (e.g. [5, 7])",
         section.where("profile_steps"), problem);
  };
  if (!node.IsSequence() || node.size() != 2) bad("not a list of two steps");
  std::array<int64_t, 2> steps{};
  for (size_t i = 0; i < 2; ++i) {
    const std::string text = node[i].IsScalar() ? node[i].Scalar() : "";
    size_t used = 0;
    try {
      steps[i] = std::stoll(text, &used, 10);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size()) bad(fmt::format("'{}' is not an integer", text));
  }
  if (steps[0] < 1) bad(fmt::format("first step {} is not positive (steps count from 1)", steps[0]));
  if (steps[1] < steps[0]) bad(fmt::format("last step {} is before first step {}", steps[1], steps[0]));
  return steps;
}

TrainingOptions read_training_section(ConfigReader section) {
  TrainingOptions t;
  t.learning_rate = section.get_double("learning_rate", t.learning_rate);
  require(t.learning_rate >= 0, section, "learning_rate", "non-negative", t.learning_rate);
  t.weight_decay = section.get_double("weight_decay", t.weight_decay);
  require(t.weight_decay >= 0, section, "weight_decay", "non-negative", t.weight_decay);
  t.adam_beta1 = section.get_double("adam_beta1", t.adam_beta1);
  require(t.adam_beta1 >= 0 && t.adam_beta1 < 1, section, "adam_beta1", "in [0, 1)", t.adam_beta1);
  t.adam_beta2 = section.get_double("adam_beta2", t.adam_beta2);
  require(t.adam_beta2 >= 0 && t.adam_beta2 < 1, section, "adam_beta2", "in [0, 1)", t.adam_beta2);
  t.adam_epsilon = section.get_double("adam_epsilon", t.adam_epsilon);
  require(t.adam_epsilon > 0, section, "adam_epsilon", "positive", t.adam_epsilon);
  t.max_grad_norm = section.get_double("max_grad_norm", t.max_grad_norm);
  t.lr_scheduler_type = section.get_choice("lr_scheduler_type",
                                           {"linear", "cosine", "constant", "constant_with_warmup"},
                                           t.lr_scheduler_type);
  t.warmup_steps = section.get_int("warmup_steps", t.warmup_steps);
  require(t.warmup_steps >= 0, section, "warmup_steps", "non-negative", t.warmup_steps);
  t.warmup_ratio = section.get_double("warmup_ratio", t.warmup_ratio);
  require(t.warmup_ratio >= 0 && t.warmup_ratio <= 1, section, "warmup_ratio", "in [0, 1]", t.warmup_ratio);
  t.per_device_train_batch_size = section.get_int("per_device_train_batch_size", t.per_device_train_batch_size);
  require(t.per_device_train_batch_size >= 1, section, "per_device_train_batch_size", "at least 1",
          t.per_device_train_batch_size);
  t.gradient_accumulation_steps = section.get_int("gradient_accumulation_steps", t.gradient_accumulation_steps);
  require(t.gradient_accumulation_steps >= 1, section, "gradient_accumulation_steps", "at least 1",
          t.gradient_accumulation_steps);
  t.max_steps = section.get_int("max_steps", t.max_steps);
  require(t.max_steps == -1 || t.max_steps > 0, section, "max_steps", "-1 (use num_train_epochs) or positive",
          t.max_steps);
  t.num_train_epochs = section.get_double("num_train_epochs", t.num_train_epochs);
  require(t.max_steps > 0 || t.num_train_epochs > 0, section, "num_train_epochs", "positive when max_steps is -1",
          t.num_train_epochs);
  t.logging_steps = section.get_int("logging_steps", t.logging_steps);
  require(t.logging_steps >= 1, section, "logging_steps", "at least 1", t.logging_steps);
  t.save_steps = section.get_int("save_steps", t.save_steps);
  require(t.save_steps >= 0, section, "save_steps", "non-negative (0 = only the final save)", t.save_steps);
  t.eval_strategy = section.get_choice("eval_strategy", {"no", "steps", "epoch"}, t.eval_strategy);
  t.eval_steps = section.get_int("eval_steps", t.eval_steps);
  require(t.eval_steps >= 0, section, "eval_steps", "non-negative (0 = logging_steps)", t.eval_steps);
  t.per_device_eval_batch_size = section.get_int("per_device_eval_batch_size", t.per_device_eval_batch_size);
  require(t.per_device_eval_batch_size >= 1, section, "per_device_eval_batch_size", "at least 1",
          t.per_device_eval_batch_size);
  t.load_best_model_at_end = section.get_bool("load_best_model_at_end", t.load_best_model_at_end);
  t.metric_for_best_model = section.get_choice("metric_for_best_model", {"eval_loss", "loss"}, t.metric_for_best_model);
  QFT_CHECK(!t.load_best_model_at_end || t.eval_strategy != "no",
            "{}: load_best_model_at_end needs evaluations: set eval_strategy to steps or epoch (and data.val_size)",
            section.where("load_best_model_at_end"));
  t.seed = section.get_int("seed", t.seed);
  t.shuffle = section.get_bool("shuffle", t.shuffle);
  t.dataloader_drop_last = section.get_bool("dataloader_drop_last", t.dataloader_drop_last);
  t.gradient_checkpointing = section.get_bool("gradient_checkpointing", t.gradient_checkpointing);
  t.recompute_granularity = section.get_string("recompute_granularity", t.recompute_granularity);
  require(t.recompute_granularity == "full" || t.recompute_granularity == "selective", section,
          "recompute_granularity", "full or selective", t.recompute_granularity);
  // The keys that shape what full recompute keeps: set (or on) without it, an error naming it.
  const bool full_recompute = t.gradient_checkpointing && t.recompute_granularity == "full";
  auto require_full_recompute = [&](bool set, const char* key, const char* what) {
    QFT_CHECK(!set || full_recompute,
              "{}: {} {}: it needs gradient_checkpointing: true with recompute_granularity: full",
              section.where(key), key, what);
  };
  t.recompute_num_layers = section.get_int("recompute_num_layers", t.recompute_num_layers);
  require(t.recompute_num_layers == -1 || t.recompute_num_layers >= 0, section, "recompute_num_layers",
          "a number of layers (0 or more), or -1 (all)", t.recompute_num_layers);
  require_full_recompute(section.has("recompute_num_layers"), "recompute_num_layers",
                         "picks how many layers full recompute checkpoints");
  t.checkpoint_residuals = section.get_bool("checkpoint_residuals", t.checkpoint_residuals);
  require_full_recompute(t.checkpoint_residuals, "checkpoint_residuals",
                         "keeps a second tensor per checkpointed layer");
  t.use_fused_kernels = section.get_bool("use_fused_kernels", t.use_fused_kernels);
  t.tiled_mlp = section.get_bool("tiled_mlp", t.tiled_mlp);
  t.tiled_mlp_num_shards = section.get_int("tiled_mlp_num_shards", t.tiled_mlp_num_shards);
  require(t.tiled_mlp_num_shards >= 0, section, "tiled_mlp_num_shards",
          "a positive number of chunks, or 0 (ceil(tokens / hidden_size))", t.tiled_mlp_num_shards);
  QFT_CHECK(!section.has("tiled_mlp_num_shards") || t.tiled_mlp,
            "{}: tiled_mlp_num_shards applies only with tiled_mlp: true (it is false)",
            section.where("tiled_mlp_num_shards"));
  t.activation_offloading = section.get_bool("activation_offloading", t.activation_offloading);
  require_full_recompute(t.activation_offloading, "activation_offloading",
                         "moves the layer inputs that gradient checkpointing keeps");
  t.activation_offloading_layers = section.get_int("activation_offloading_layers", t.activation_offloading_layers);
  require(t.activation_offloading_layers == -1 || t.activation_offloading_layers >= 1, section,
          "activation_offloading_layers", "a positive number of layers, or -1 (all)", t.activation_offloading_layers);
  QFT_CHECK(!section.has("activation_offloading_layers") || t.activation_offloading,
            "{}: activation_offloading_layers applies only with activation_offloading: true (it is false)",
            section.where("activation_offloading_layers"));
  t.loss_chunk_tokens = section.get_int("loss_chunk_tokens", t.loss_chunk_tokens);
  require(t.loss_chunk_tokens >= 1, section, "loss_chunk_tokens", "at least 1", t.loss_chunk_tokens);
  t.profile_steps = read_profile_steps(section);
  t.resume_from_checkpoint = section.get_string("resume_from_checkpoint", "");
  if (!t.resume_from_checkpoint.empty() && t.resume_from_checkpoint != "latest") {
    std::error_code ec;
    QFT_CHECK(fs::exists(fs::path(t.resume_from_checkpoint) / "trainer_state.json", ec),
              "{}: '{}' is not a qft checkpoint directory (no trainer_state.json); give a checkpoint-<step> "
              "directory or 'latest'",
              section.where("resume_from_checkpoint"), t.resume_from_checkpoint);
  }
  section.finish();
  return t;
}

DistributedOptions read_distributed_section(ConfigReader section) {
  DistributedOptions d;
  d.tensor_parallel_size = section.get_int("tensor_parallel_size", d.tensor_parallel_size);
  require(d.tensor_parallel_size >= 1, section, "tensor_parallel_size", "a positive integer", d.tensor_parallel_size);
  d.zero_stage = section.get_int("zero_stage", d.zero_stage);
  require(d.zero_stage >= 0 && d.zero_stage <= 3, section, "zero_stage", "0, 1, 2 or 3", d.zero_stage);
  d.sequence_parallel = section.get_bool("sequence_parallel", d.sequence_parallel);
  require(!d.sequence_parallel || d.tensor_parallel_size > 1, section, "sequence_parallel",
          "false unless tensor_parallel_size > 1 (it splits the tokens over the tensor-parallel ranks)",
          d.sequence_parallel);
  d.ddp_bucket_cap_mb = section.get_double("ddp_bucket_cap_mb", d.ddp_bucket_cap_mb);
  require(d.ddp_bucket_cap_mb >= 0, section, "ddp_bucket_cap_mb", "megabytes >= 0 (0: one collective per layer)",
          d.ddp_bucket_cap_mb);
  d.collective_timeout = section.get_double("collective_timeout", d.collective_timeout);
  require(d.collective_timeout >= 0, section, "collective_timeout", "seconds >= 0 (0 = wait forever)",
          d.collective_timeout);
  section.finish();
  return d;
}

OutputOptions read_output_section(ConfigReader section) {
  OutputOptions o;
  o.output_dir = section.get_string("output_dir");
  QFT_CHECK(!o.output_dir.empty(), "{} must not be empty", section.where("output_dir"));
  std::error_code ec;
  QFT_CHECK(!fs::exists(o.output_dir, ec) || fs::is_directory(o.output_dir, ec),
            "{}: '{}' exists and is not a directory (checkpoints and the adapter are written into it)",
            section.where("output_dir"), o.output_dir);
  o.overwrite_output_dir = section.get_bool("overwrite_output_dir", o.overwrite_output_dir);
  o.save_total_limit = section.get_int("save_total_limit", o.save_total_limit);
  require(o.save_total_limit >= 0, section, "save_total_limit", "non-negative (0 = keep all)", o.save_total_limit);
  o.report_to = section.get_choice("report_to", {"none", "tensorboard"}, o.report_to);
  section.finish();
  return o;
}

// Walks "a.b.c" in a YAML tree, creating mappings on the way.
void set_yaml_path(YAML::Node& root, const std::vector<std::string>& keys, const YAML::Node& value,
                   const std::string& override_text) {
  YAML::Node current;
  current.reset(root);
  for (size_t i = 0; i + 1 < keys.size(); ++i) {
    YAML::Node next = current[keys[i]];
    if (!next.IsDefined() || next.IsNull()) {
      current[keys[i]] = YAML::Node(YAML::NodeType::Map);
      next.reset(current[keys[i]]);
    }
    QFT_CHECK(next.IsMap(), "--override {}: '{}' is not a section", override_text, keys[i]);
    current.reset(next);
  }
  current[keys.back()] = value;
}

// A 4-bit base (load_in_4bit, or a bitsandbytes checkpoint) is frozen: only LoRA trains on it.
void check_4bit_finetuning(const TrainConfig& config, const std::string& source) {
  if (config.finetuning_type != FinetuningType::full) return;
  QFT_CHECK(!config.model.load_in_4bit,
            "{}: model.load_in_4bit with lora.finetuning_type full: a 4-bit base is frozen and gets no gradients "
            "(QLoRA trains LoRA adapters on it); use finetuning_type: lora, or drop load_in_4bit for full fine-tuning",
            source);
  const std::string config_json = (fs::path(config.model.model_name_or_path) / "config.json").string();
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(read_file(config_json));
  } catch (const std::exception&) {
    return;  // the model loader reports a broken config.json with its own message
  }
  QFT_CHECK(!json.is_object() || !json.contains("quantization_config"),
            "{}: lora.finetuning_type full, but {} has a quantization_config (a 4-bit bitsandbytes checkpoint): 4-bit "
            "weights are frozen; train LoRA on it (QLoRA: finetuning_type lora) or fully fine-tune the bf16 checkpoint",
            source, config_json);
}

}  // namespace

DataOptions read_data_section(ConfigReader data) {
  DataOptions options;
  QFT_CHECK(data.has("datasets") || data.has("pretokenized"),
            "{}: the data section needs `datasets` (JSONL chat/alpaca/sharegpt/text files) or `pretokenized` "
            "(rows of token ids); see docs/CONFIG.md", data.where("datasets"));
  QFT_CHECK(!(data.has("datasets") && data.has("pretokenized")),
            "{}: give either data.datasets or data.pretokenized, not both", data.where("pretokenized"));
  options.val_size = data.get_double("val_size", options.val_size);
  require(options.val_size >= 0 && (options.val_size < 1 || options.val_size == std::floor(options.val_size)), data,
          "val_size", "a fraction in [0, 1) or a whole number of rows", options.val_size);
  if (data.has("pretokenized")) {
    options.pretokenized = data.get_string("pretokenized");
    QFT_CHECK(file_exists(options.pretokenized), "{}: file '{}' does not exist", data.where("pretokenized"),
              options.pretokenized);
  } else {
    options.pipeline = data::read_data_config(data);
  }
  data.finish();
  return options;
}

TrainConfig parse_train_config(const YAML::Node& root, const std::string& source) {
  check_top_level_key_hints(root, source);  // a flat LLaMA-Factory/TRL layout: say so before "missing model"
  ConfigReader top(root, source);
  TrainConfig config;
  config.source = source;
  // Fixed order, so the first error a user sees is the first section in the file layout of the docs.
  config.model = read_model_section(top.section("model"));
  config.lora = read_lora_section(top.section("lora"), config.finetuning_type);
  check_4bit_finetuning(config, source);
  config.data = read_data_section(top.section("data"));
  if (config.data.pipeline) {
    config.data.tokenizer =
        config.data.pipeline->tokenizer.empty() ? config.model.model_name_or_path : config.data.pipeline->tokenizer;
    config.data.token_cache = data::token_cache_path(*config.data.pipeline, config.data.tokenizer);
  }
  config.data_as_given = YAML::Clone(root["data"]);
  config.training = read_training_section(top.section("training"));
  QFT_CHECK(config.training.eval_strategy == "no" || config.data.val_size > 0,
            "{}: training.eval_strategy {} evaluates on held-out rows: set data.val_size (a fraction or a count)",
            source, config.training.eval_strategy);
  config.distributed = read_distributed_section(top.section("distributed"));
  ConfigReader output_section = top.section("output");
  config.output = read_output_section(output_section);
  top.finish();
  // overwrite_output_dir deletes model files in output_dir: it must never be an input directory.
  for (const std::string* input : {&config.model.model_name_or_path, &config.lora.adapter_name_or_path}) {
    if (input->empty()) continue;
    std::error_code ec;
    QFT_CHECK(fs::weakly_canonical(*input, ec) != fs::weakly_canonical(config.output.output_dir, ec),
              "{}: output_dir '{}' is the input directory '{}'; choose another output_dir",
              output_section.where("output_dir"), config.output.output_dir, *input);
  }
  return config;
}

TrainConfig load_train_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  YAML::Node root = load_yaml_file(yaml_path);
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  QFT_CHECK(root.IsMap(), "{}: the config must be a mapping with sections model, lora, data, training, output",
            yaml_path);
  for (const auto& o : overrides) apply_override(root, o);
  try {
    return parse_train_config(root, yaml_path);
  } catch (const Error& e) {
    // An overridden value has no line in the file: say where it came from.
    const std::string message = e.what();
    for (const auto& o : overrides) {
      const std::string key_path = o.substr(0, o.find('='));
      if (message.find("'" + key_path + "'") != std::string::npos) fail("{} (set by --override {})", message, o);
    }
    throw;
  }
}

void apply_override(YAML::Node& root, const std::string& override_text) {
  const size_t eq = override_text.find('=');
  QFT_CHECK(eq != std::string::npos && eq > 0, "--override '{}': expected section.key=value", override_text);
  const std::string path = override_text.substr(0, eq);
  std::vector<std::string> keys;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    keys.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  for (const auto& k : keys) QFT_CHECK(!k.empty(), "--override '{}': empty key in '{}'", override_text, path);
  YAML::Node value;
  try {
    value = YAML::Load(override_text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("--override '{}': the value is not valid YAML: {}", override_text, e.msg);
  }
  set_yaml_path(root, keys, value, override_text);
}

nlohmann::json TrainConfig::math_fingerprint() const {
  nlohmann::json j = to_json();
  // Run length, logging, saving, recomputation, loss chunking and where things go do not change the
  // numbers of the steps taken, so a resume may change them.
  for (const char* key : {"max_steps", "num_train_epochs", "logging_steps", "save_steps", "resume_from_checkpoint",
                          "gradient_checkpointing", "recompute_granularity", "recompute_num_layers",
                          "checkpoint_residuals", "use_fused_kernels", "loss_chunk_tokens", "eval_strategy",
                          "tiled_mlp", "tiled_mlp_num_shards", "activation_offloading",
                          "activation_offloading_layers",
                          "eval_steps",
                          "per_device_eval_batch_size", "load_best_model_at_end", "metric_for_best_model"}) {
    j["training"].erase(key);
  }
  j["training"].erase("profile_steps");  // what is profiled does not change the steps either
  j.erase("output");
  j.erase("distributed");
  // Absent unless set, so that runs without QLoRA keep the fingerprint their checkpoints stored.
  if (!model.load_in_4bit) j["model"].erase("load_in_4bit");
  return j;
}

namespace {

YAML::Node json_to_yaml(const nlohmann::json& j) {
  if (j.is_object()) {
    YAML::Node node(YAML::NodeType::Map);
    for (const auto& [key, value] : j.items()) node[key] = json_to_yaml(value);
    return node;
  }
  if (j.is_array()) {
    YAML::Node node(YAML::NodeType::Sequence);
    for (const auto& value : j) node.push_back(json_to_yaml(value));
    return node;
  }
  if (j.is_string()) return YAML::Node(j.get<std::string>());
  if (j.is_null()) return YAML::Node(YAML::NodeType::Null);
  std::string text = j.dump();  // numbers and booleans: JSON's spelling is valid YAML...
  // ...but YAML 1.1 readers (PyYAML) take "1e-05" for a string; "1.0e-05" is a float everywhere.
  if (j.is_number_float() && text.find('.') == std::string::npos && text.find('e') != std::string::npos) {
    text.insert(text.find('e'), ".0");
  }
  return YAML::Node(text);
}

}  // namespace

std::string TrainConfig::resolved_yaml() const {
  const nlohmann::json j = to_json();
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const char* section : {"model", "lora", "data", "training", "output"}) {
    out << YAML::Key << section << YAML::Value;
    if (std::string(section) == "data" && data_as_given.IsDefined()) {
      out << data_as_given;
    } else {
      out << json_to_yaml(j[section]);
    }
  }
  out << YAML::EndMap;
  return fmt::format("# The config of this run as qft resolved it from {} (overrides applied, defaults filled in).\n{}\n",
                     source, out.c_str());
}

std::optional<model::Nf4Options> TrainConfig::load_in_4bit() const {
  if (!model.load_in_4bit) return std::nullopt;
  model::Nf4Options options;
  options.double_quant = model.bnb_4bit_use_double_quant;
  return options;
}

uint64_t TrainConfig::hash() const { return fnv1a64(math_fingerprint().dump()); }

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j;
  j["model"] = {{"model_name_or_path", model.model_name_or_path},
                {"torch_dtype", model.torch_dtype},
                {"device", model.device},
                {"load_in_4bit", model.load_in_4bit}};
  if (model.load_in_4bit) {
    j["model"]["bnb_4bit_quant_type"] = model.bnb_4bit_quant_type;
    j["model"]["bnb_4bit_use_double_quant"] = model.bnb_4bit_use_double_quant;
    j["model"]["bnb_4bit_compute_dtype"] = model.bnb_4bit_compute_dtype;
  }
  j["lora"] = {{"finetuning_type", finetuning_type == FinetuningType::full ? "full" : "lora"},
               {"r", lora.r},
               {"lora_alpha", lora.lora_alpha},
               {"lora_dropout", lora.lora_dropout},
               {"target_modules", lora.target_modules},
               {"use_rslora", lora.use_rslora},
               {"init_lora_weights", lora.init_lora_weights},
               {"adapter_name_or_path", lora.adapter_name_or_path}};
  if (data.pipeline) {
    // The token cache's key hashes the data files, the tokenizer and every option that shapes the tokens.
    j["data"] = {{"token_cache", data.token_cache},
                 {"max_seq_length", data.pipeline->max_seq_length},
                 {"packing", data.pipeline->packing}};
  } else {
    j["data"] = {{"pretokenized", data.pretokenized}};
  }
  j["data"]["val_size"] = data.val_size;
  const TrainingOptions& t = training;
  j["training"] = {{"learning_rate", t.learning_rate},
                   {"weight_decay", t.weight_decay},
                   {"adam_beta1", t.adam_beta1},
                   {"adam_beta2", t.adam_beta2},
                   {"adam_epsilon", t.adam_epsilon},
                   {"max_grad_norm", t.max_grad_norm},
                   {"lr_scheduler_type", t.lr_scheduler_type},
                   {"warmup_steps", t.warmup_steps},
                   {"warmup_ratio", t.warmup_ratio},
                   {"per_device_train_batch_size", t.per_device_train_batch_size},
                   {"gradient_accumulation_steps", t.gradient_accumulation_steps},
                   {"max_steps", t.max_steps},
                   {"num_train_epochs", t.num_train_epochs},
                   {"logging_steps", t.logging_steps},
                   {"save_steps", t.save_steps},
                   {"seed", t.seed},
                   {"shuffle", t.shuffle},
                   {"dataloader_drop_last", t.dataloader_drop_last},
                   {"gradient_checkpointing", t.gradient_checkpointing},
                   {"recompute_granularity", t.recompute_granularity},
                   {"use_fused_kernels", t.use_fused_kernels},
                   {"tiled_mlp", t.tiled_mlp},
                   {"activation_offloading", t.activation_offloading},
                   {"loss_chunk_tokens", t.loss_chunk_tokens},
                   {"resume_from_checkpoint", t.resume_from_checkpoint},
                   {"eval_strategy", t.eval_strategy},
                   {"eval_steps", t.eval_steps},
                   {"per_device_eval_batch_size", t.per_device_eval_batch_size},
                   {"load_best_model_at_end", t.load_best_model_at_end},
                   {"metric_for_best_model", t.metric_for_best_model}};
  // Only when set: absent keeps the records (and resolved configs) of runs without profiling as they were.
  if (t.profile_steps[0] > 0) j["training"]["profile_steps"] = t.profile_steps;
  // Written only where they apply: set without their switch they are an error.
  if (t.tiled_mlp) j["training"]["tiled_mlp_num_shards"] = t.tiled_mlp_num_shards;
  if (t.activation_offloading) j["training"]["activation_offloading_layers"] = t.activation_offloading_layers;
  if (t.gradient_checkpointing && t.recompute_granularity == "full") {
    j["training"]["recompute_num_layers"] = t.recompute_num_layers;
    j["training"]["checkpoint_residuals"] = t.checkpoint_residuals;
  }
  j["distributed"] = {{"tensor_parallel_size", distributed.tensor_parallel_size},
                      {"zero_stage", distributed.zero_stage},
                      {"sequence_parallel", distributed.sequence_parallel},
                      {"ddp_bucket_cap_mb", distributed.ddp_bucket_cap_mb},
                      {"collective_timeout", distributed.collective_timeout}};
  j["output"] = {{"output_dir", output.output_dir},
                 {"overwrite_output_dir", output.overwrite_output_dir},
                 {"save_total_limit", output.save_total_limit},
                 {"report_to", output.report_to}};
  return j;
}

}  // namespace qft::train
