// The training config: one YAML file with the sections model, lora, data, training, output. Key names
// follow the Hugging Face / PEFT / LLaMA-Factory names a user already knows (docs/CONFIG.md lists every
// key with its type, default and HF equivalent). Reading is strict: unknown keys, wrong types and bad
// choices are errors naming file:line and the key path.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/config_reader.h"
#include "data/data_config.h"
#include "model/lora.h"
#include "model/nf4_weight.h"
#include "model/ops/cross_entropy.h"

namespace qft::train {

struct ModelOptions {
  std::string model_name_or_path;  // a Hugging Face model directory (config.json + safetensors)
  std::string torch_dtype = "auto";  // bf16 | fp16 | fp32 | auto (fp32 on CPU, bf16 on GPU)
  std::string device = "auto";       // auto | cpu | cuda
  // QLoRA (HF BitsAndBytesConfig names): quantize the projections to NF4 at load. Double quantization is
  // on by default here (BitsAndBytesConfig's default is off; QLoRA's recipe and the issue use it).
  bool load_in_4bit = false;
  std::string bnb_4bit_quant_type = "nf4";     // nf4 (fp4 is refused)
  bool bnb_4bit_use_double_quant = true;
  std::string bnb_4bit_compute_dtype = "auto";  // auto = torch_dtype; anything else must equal it
};

enum class FinetuningType { lora, full };

// The LoRA keys of the `lora` section; defaults are PEFT's (model::LoraConfig).
struct LoraOptions {
  int64_t r = model::LoraConfig{}.r;
  double lora_alpha = model::LoraConfig{}.lora_alpha;
  double lora_dropout = model::LoraConfig{}.lora_dropout;
  // As written by the user: projection names, "all-linear", or one regex string (PEFT semantics).
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  bool use_rslora = false;
  std::string init_lora_weights = "true";  // "true" | "gaussian"
  std::string adapter_name_or_path;        // continue training an existing PEFT adapter ("" = fresh init)
};

// The data section: either the text pipeline (data sets -> chat template -> masks -> packing -> HDF5
// token cache, src/data) or pretokenized rows (tests and reference comparisons).
struct DataOptions {
  // JSONL, one row per line: {"input_ids": [...], "labels": [...]} with optional "position_ids" and
  // "segment_ids" (packed rows). Labels are unshifted, as in HF: -100 marks positions without loss.
  std::string pretokenized;
  // Set when the section lists `datasets` (docs/CONFIG.md § data).
  std::optional<data::DataConfig> pipeline;
  // With `pipeline`: the tokenizer (data.tokenizer, else the model directory) and the token cache file
  // whose name hashes the data files, the tokenizer and the options (computed once, at load).
  std::string tokenizer;
  std::string token_cache;
  // Held-out rows for evaluation during training (LLaMA-Factory's val_size): a fraction in (0, 1) or a
  // count >= 1 of the rows (packed rows when packing), drawn with training.seed; 0 = none.
  double val_size = 0.0;
};

struct TrainingOptions {
  double learning_rate = 5e-5;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double max_grad_norm = 1.0;  // <= 0 disables clipping
  std::string lr_scheduler_type = "linear";  // linear | cosine | constant | constant_with_warmup
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  int64_t per_device_train_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  int64_t max_steps = -1;  // > 0 overrides num_train_epochs
  double num_train_epochs = 3.0;
  int64_t logging_steps = 10;
  int64_t save_steps = 500;  // 0 = only the final save
  int64_t seed = 42;
  bool shuffle = true;               // false: rows in file order (reference comparisons)
  bool dataloader_drop_last = false; // drop the last incomplete micro-batch of each epoch
  bool gradient_checkpointing = false;
  // With gradient_checkpointing: "full" keeps only each layer's input and re-runs its forward in backward;
  // "selective" keeps the GEMM and attention outputs and recomputes only norms, RoPE and SwiGLU
  // (Megatron's recompute_granularity).
  std::string recompute_granularity = "full";
  // With gradient_checkpointing and "full": only the first recompute_num_layers layers are checkpointed; the
  // others keep their activations but the cheap ones, as "selective" does (Megatron's recompute_method:
  // block with recompute_num_layers). Spends spare memory on fewer recomputed layers. -1: every layer.
  int64_t recompute_num_layers = -1;
  // With gradient_checkpointing and "full": a checkpointed layer also keeps its residual after attention,
  // so that its recompute skips the attention output projection (o_proj) GEMM.
  bool checkpoint_residuals = false;
  // On CUDA, run the fused kernels of kernels/ (norms, q/k norm + RoPE, SwiGLU, cross-entropy, AdamW, NF4)
  // instead of ATen's ops, and cuDNN's attention for one-sequence rows; no effect on CPU. Off: ATen and
  // FlashAttention-2 everywhere (comparisons).
  bool use_fused_kernels = true;
  // Long sequences (docs/DESIGN.md § Long context). tiled_mlp: the MLP block in chunks of rows, never an
  // [N, intermediate] buffer for the whole sequence (axolotl / Arctic ALST's names); tiled_mlp_num_shards
  // chunks, 0 = ceil(tokens / hidden_size).
  bool tiled_mlp = false;
  int64_t tiled_mlp_num_shards = 0;
  // With gradient_checkpointing: the checkpointed layer inputs of the first activation_offloading_layers
  // layers (-1 = all) go to pinned host memory between forward and backward (model/activation_offload.h).
  bool activation_offloading = false;
  int64_t activation_offloading_layers = -1;
  // Evaluation during training on data.val_size's held-out rows (HF TrainingArguments names).
  std::string eval_strategy = "no";  // no | steps | epoch
  int64_t eval_steps = 0;            // with eval_strategy steps; 0 = logging_steps, as HF
  int64_t per_device_eval_batch_size = 8;
  bool load_best_model_at_end = false;        // the final adapter/model is the one with the best eval_loss
  std::string metric_for_best_model = "eval_loss";
  int64_t loss_chunk_tokens = model::ops::kDefaultLossChunkTokens;
  std::string resume_from_checkpoint;  // a checkpoint-<step> directory, "latest", or "" (fresh run)
  // [first, last]: profile optimizer steps first..last (1-based, inclusive) with libtorch's Kineto profiler
  // into output_dir/profile/trace_rank<r>.json (train/step_profiler.h); {0, 0} = off.
  std::array<int64_t, 2> profile_steps = {0, 0};
};

// How the ranks of a job share the work (docs/DISTRIBUTED.md). The numbers a run computes do not
// depend on these (up to floating-point rounding), so a resume may change them.
struct DistributedOptions {
  int64_t tensor_parallel_size = 1;  // ranks that split each layer (Megatron); the rest is data parallel
  int64_t zero_stage = 0;            // 0-3, as DeepSpeed (docs/DISTRIBUTED.md)
  // Megatron's sequence parallelism: between the tensor-parallel layers each rank keeps only its share of
  // the tokens (the norms run on it), so activation memory outside attention/MLP shrinks by T.
  bool sequence_parallel = false;
  // Data-parallel gradient buckets (ZeRO 0/1): consecutive layers are reduced together in collectives of
  // at least this many MB of fp32 gradients, each started as backward leaves its layers (HF
  // TrainingArguments ddp_bucket_cap_mb, torch DDP's 25 MB default).
  double ddp_bucket_cap_mb = 25.0;
  // Seconds a collective of a training step may wait for the other ranks before this rank ends the job
  // (a rank died or hangs); 0 = wait forever. Saving, which one rank does alone, is not timed.
  double collective_timeout = 60.0;
};

struct OutputOptions {
  std::string output_dir;
  bool overwrite_output_dir = false;
  int64_t save_total_limit = 0;  // 0 = keep every checkpoint
  std::string report_to = "none";
};

struct TrainConfig {
  ModelOptions model;
  // lora: adapters on a frozen base; full: every base weight trained. Written as `lora.finetuning_type`,
  // next to the LoRA keys where LLaMA-Factory users look for it.
  FinetuningType finetuning_type = FinetuningType::lora;
  LoraOptions lora;
  DataOptions data;
  TrainingOptions training;
  DistributedOptions distributed;
  OutputOptions output;
  std::string source;  // the YAML file it was read from (for messages)

  // The values that change the numbers a run computes, as canonical JSON. A checkpoint stores it; a
  // resume must see the same (everything except the run length, logging, saving and output keys).
  nlohmann::json math_fingerprint() const;
  // The NF4 options when model.load_in_4bit is set (blocksize 64, as bitsandbytes' Linear4bit).
  std::optional<model::Nf4Options> load_in_4bit() const;
  // FNV-1a 64 of math_fingerprint().dump(): compared across ranks and against a checkpoint.
  uint64_t hash() const;
  // Every option, for the run's own record (output_dir/train_config.json).
  nlohmann::json to_json() const;
  // The config as the run used it, for output_dir/qft_config.yaml: every key of model, lora, training
  // and output with defaults filled in, and the data section as given (after --override).
  std::string resolved_yaml() const;
  YAML::Node data_as_given;
};

// Reads and validates a YAML config. `overrides` are "section.key=value" strings (value parsed as
// YAML) applied before validation, so they get the same checks as the file.
TrainConfig load_train_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});
// Same, from an already loaded YAML tree (tests build configs in memory); `source` names it in errors.
TrainConfig parse_train_config(const YAML::Node& root, const std::string& source);

// The one place that reads the `data` section (see DataOptions).
DataOptions read_data_section(ConfigReader data);

// Applies one "a.b.c=value" override to a YAML tree; the value is parsed as YAML (numbers, bools,
// lists `[q_proj, v_proj]`).
void apply_override(YAML::Node& root, const std::string& override_text);

}  // namespace qft::train
