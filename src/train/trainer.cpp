#include "train/trainer.h"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/files.h"
#include "hf/dtype_names.h"
#include "hf/model_dir.h"
#include "train/memory_plan.h"
#include "train/memory_stats.h"
#include "hf/peft_adapter.h"
#include "core/remove_tree.h"
#include "model/lora_targets.h"
#include "model/ops/fused_kernels.h"
#include "parallel/launch_check.h"
#include "parallel/nccl_communicator.h"
#include "parallel/tp_model.h"
#include "parallel/tp_sharding.h"
#include "train/step_profiler.h"
#include "train/training_rows.h"

namespace qft::train {

namespace {

namespace fs = std::filesystem;

constexpr const char* kLogFile = "trainer_log.jsonl";

// HF excludes biases and normalisation weights from weight decay (Trainer.get_decay_parameter_names).
bool decays(const std::string& name) { return name.find("norm") == std::string::npos; }

// Files a finished run leaves in output_dir; their presence means "this directory holds a run".
bool holds_training_output(const std::string& dir) {
  if (!fs::is_directory(dir)) return false;
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors", "config.json", kLogFile, kLatestFile}) {
    if (fs::exists(fs::path(dir) / name)) return true;
  }
  return !list_checkpoints(dir).empty();
}

void remove_training_output(const std::string& dir) {
  for (const auto& checkpoint : list_checkpoints(dir)) remove_tree(checkpoint);
  remove_interrupted_saves(dir);
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "runs" && entry.is_directory()) remove_tree(entry.path().string());  // TensorBoard events
    const bool ours = name == "adapter_config.json" || name == "adapter_model.safetensors" || name == "config.json" ||
                      name == kLogFile || name == kLatestFile || name == "model.safetensors.index.json" ||
                      name == "qft_config.yaml" || name == "run_summary.json" || name == "report.html" ||
                      (name.rfind("model", 0) == 0 && entry.path().extension() == ".safetensors");
    if (ours) fs::remove(entry.path());
  }
}

std::string resolve_resume_dir(const TrainConfig& config) {
  const std::string& value = config.training.resume_from_checkpoint;
  if (value != "latest") return value;
  return resolve_latest(config.output.output_dir, config.source);
}

// The fingerprint less the batch shape: a resume may trade gradient accumulation for data-parallel ranks
// (Trainer::restore_checkpoint checks that the global batch stays the same).
nlohmann::json without_batch_shape(nlohmann::json fingerprint) {
  if (fingerprint.contains("training")) {
    fingerprint["training"].erase("per_device_train_batch_size");
    fingerprint["training"].erase("gradient_accumulation_steps");
  }
  return fingerprint;
}

// The sequences of `row` (its segments when packed, else the row) holding a position >= `limit`.
// Positions are the row's own, else 0.. restarting at each segment, as the model numbers them.
int64_t sequences_beyond(const TokenRow& row, int64_t limit) {
  int64_t count = 0, position = 0;
  bool counted = false;  // the current sequence is counted already
  for (size_t t = 0; t < row.input_ids.size(); ++t) {
    const int64_t segment = row.segment_ids.empty() ? 0 : row.segment_ids[t];
    const bool starts = t == 0 || (!row.segment_ids.empty() && segment != row.segment_ids[t - 1]);
    if (starts) {
      position = 0;
      counted = false;
    }
    const int64_t p = row.position_ids.empty() ? position++ : row.position_ids[t];
    if (segment >= 0 && p >= limit && !counted) {
      ++count;
      counted = true;
    }
  }
  return count;
}

// Sum of squares in double, a slice at a time: a double copy of a ZeRO shard of 8B full fine-tuning would
// be 30 GiB.
double squared_norm(const at::Tensor& flat) {
  constexpr int64_t kSlice = int64_t{1} << 26;
  at::Tensor sum = at::zeros({}, flat.options().dtype(at::kDouble));
  for (int64_t begin = 0; begin < flat.numel(); begin += kSlice)
    sum += flat.narrow(0, begin, std::min(kSlice, flat.numel() - begin)).to(at::kDouble).square().sum();
  return sum.item<double>();
}

void check_grad_norm(double grad_norm, double loss, int64_t step) {
  QFT_CHECK(std::isfinite(grad_norm),
            "step {}: the gradient norm is {} (loss {}); training stopped and no final adapter or model was written",
            step + 1, grad_norm, loss);
}

}  // namespace

Trainer::Trainer(TrainConfig config, parallel::Communicator& world, int local_rank)
    : config_(std::move(config)), world_(world), local_rank_(local_rank) {
  rank_ = world_.rank();
  world_size_ = world_.size();
  check_launch();
  world_.check_same_on_all_ranks("the training config", config_.hash());
  full_finetuning_ = config_.finetuning_type == FinetuningType::full;
  model::ops::fused::set_enabled(config_.training.use_fused_kernels);
  resolve_device_and_dtype();
  create_groups();

  const std::string model_dir = config_.model.model_name_or_path;
  model_config_ = model::Qwen3Config::from_file((fs::path(model_dir) / "config.json").string());
  if (tensor_parallel()) {
    try {
      parallel::check_tensor_parallel_size(model_config_, grid_->tensor_parallel_size());
    } catch (const Error& e) {
      fail("{}: distributed.{} ({}/config.json)", config_.source, e.what(), model_dir);
    }
  }
  rows_ = load_training_rows(config_, model_config_, world_);
  if (config_.data.val_size > 0) {
    const RowSplit split = split_rows(rows_->size(), config_.data.val_size,
                                      static_cast<uint64_t>(config_.training.seed), config_.source);
    eval_rows_ = subset_rows(rows_, split.held_out);
    rows_ = subset_rows(rows_, split.train);
  }

  // The data plan splits rows over the data-parallel ranks; tensor-parallel peers read the same rows.
  const TrainingOptions& t = config_.training;
  plan_ = std::make_unique<DataPlan>(rows_->size(), t.per_device_train_batch_size, t.gradient_accumulation_steps,
                                     grid_->data_parallel_size(), t.shuffle, t.dataloader_drop_last,
                                     static_cast<uint64_t>(t.seed));
  total_steps_ = t.max_steps > 0
                     ? t.max_steps
                     : static_cast<int64_t>(std::ceil(t.num_train_epochs * static_cast<double>(plan_->steps_per_epoch())));
  QFT_CHECK(total_steps_ >= 1, "{}: the run has no optimizer step (num_train_epochs {} of {} steps each)",
            config_.source, t.num_train_epochs, plan_->steps_per_epoch());
  const int64_t warmup = LrSchedule::warmup_steps_for(t.warmup_steps, t.warmup_ratio, total_steps_);
  schedule_ = std::make_unique<LrSchedule>(t.lr_scheduler_type, t.learning_rate, warmup, total_steps_);

  const std::string resume_dir = resolve_resume_dir(config_);
  // Tensor parallelism reads only the rank's slices (QLoRA: each rank then quantizes its own slice); ZeRO-3
  // reads the model into host memory and each rank then keeps only its shard of the layers on the GPU.
  // model.load_in_4bit quantizes the projections to NF4 as they are read.
  const std::optional<model::Nf4Options> load_in_4bit = config_.load_in_4bit();
  model::Qwen3Weights weights =
      tensor_parallel()
          ? parallel::load_weight_shard(model_dir, model_config_, compute_dtype_, device_, groups_.tensor->rank(),
                                        groups_.tensor->size(), load_in_4bit)
          : model::Qwen3Weights::load(model_dir, model_config_, compute_dtype_,
                                      zero_stage() == 3 ? at::kCPU : device_, load_in_4bit);
  model_ = std::make_unique<model::Qwen3Model>(model_config_, std::move(weights));
  create_trainable_state(resume_dir);
  if (!resume_dir.empty()) restore_checkpoint(resume_dir);

  // The report's data statistics: rank 0 reads every row once (the other ranks read only their own).
  nlohmann::json data_statistics = nlohmann::json::object();
  int64_t longest_row = 0;
  if (rank_ == 0) {
    std::vector<int64_t> lengths, targets;
    int64_t too_long = 0;
    constexpr int64_t kChunk = 4096;
    for (int64_t begin = 0; begin < rows_->size(); begin += kChunk) {
      std::vector<int64_t> indices;
      for (int64_t r = begin; r < std::min(rows_->size(), begin + kChunk); ++r) indices.push_back(r);
      for (const TokenRow& row : rows_->read(indices)) {
        lengths.push_back(static_cast<int64_t>(row.input_ids.size()));
        targets.push_back(row.target_tokens);
        longest_row = std::max(longest_row, lengths.back());
        too_long += sequences_beyond(row, model_config_.max_position_embeddings);
      }
    }
    data_statistics = report::data_statistics(lengths, targets);
    // transformers trains on such positions without a word; RoPE computes any position, but the model
    // never saw them in pre-training (rope_scaling, e.g. YaRN, is how a longer context is meant to be set).
    if (too_long > 0) {
      spdlog::warn("{} training sequence{} longer than max_position_embeddings {} ({}/config.json){}", too_long,
                   too_long == 1 ? " is" : "s are", model_config_.max_position_embeddings, model_dir,
                   model_config_.rope_scaling.type == model::RopeScaling::Type::none
                       ? "; positions beyond it were not seen in pre-training (rope_scaling, e.g. yarn, extends "
                         "the context)"
                       : "");
    }
  }
  QFT_CHECK(config_.training.recompute_num_layers <= model_config_.num_hidden_layers,
            "{}: training.recompute_num_layers is {}, but the model has {} layers", config_.source,
            config_.training.recompute_num_layers, model_config_.num_hidden_layers);
  const int64_t checkpointed = checkpointed_layers();
  if (config_.training.activation_offloading) {
    const int64_t asked = config_.training.activation_offloading_layers;
    QFT_CHECK(asked <= checkpointed, "{}: training.activation_offloading_layers is {}, but {} {} layers",
              config_.source, asked,
              config_.training.recompute_num_layers >= 0 ? "training.recompute_num_layers checkpoints only"
                                                         : "the model has",
              checkpointed);
    activation_offload_ = std::make_unique<model::ActivationOffload>(asked == -1 ? checkpointed : asked);
  }
  check_memory(world_.all_reduce_sum(longest_row));
  // Only now that everything loaded and fits: overwrite_output_dir deletes the previous run's files.
  prepare_output_dir();

  if (rank_ == 0) {
    spdlog::info("training {} on {} ({}), {} rows, {} optimizer steps ({} per epoch), warmup {}, {}, ZeRO stage {}, "
                 "collectives over {}",
                 full_finetuning_ ? "all weights"
                                  : fmt::format("LoRA r={} alpha={}{}", lora_->config.r, lora_->config.lora_alpha,
                                                model::has_nf4_projections(model_->weights())
                                                    ? " on an NF4 (4-bit) base"
                                                    : ""),
                 device_.str(), hf::torch_dtype_name(compute_dtype_), rows_->size(), total_steps_,
                 plan_->steps_per_epoch(), warmup, grid_->describe(), config_.distributed.zero_stage,
                 gpu_data_ || gpu_tensor_ ? "NCCL" : "MPI");
  }
  report::RunStart run;
  run.output_dir = config_.output.output_dir;
  run.rank = rank_;
  run.world_size = world_size_;
  run.total_steps = total_steps_;
  run.start_step = start_step_;
  run.tensorboard = config_.output.report_to == "tensorboard";
  run.config_yaml = config_.resolved_yaml();
  run.data = std::move(data_statistics);
  run.previous_rows = log_history_;
  recorder_ = std::make_unique<report::RunRecorder>(std::move(run));
}

Trainer::~Trainer() = default;

void Trainer::check_launch() const {
  parallel::check_launcher_world_size(world_size_);
  const DistributedOptions& d = config_.distributed;
  QFT_CHECK(world_size_ % d.tensor_parallel_size == 0,
            "{}: distributed.tensor_parallel_size {} does not divide the {} ranks of the job", config_.source,
            d.tensor_parallel_size, world_size_);
  QFT_CHECK(d.tensor_parallel_size == 1 || config_.finetuning_type == FinetuningType::lora,
            "{}: distributed.tensor_parallel_size {} with finetuning_type full is not available in this build yet "
            "(tensor parallelism trains LoRA adapters; full fine-tuning runs data parallel: set tensor_parallel_size: 1)",
            config_.source, d.tensor_parallel_size);
  QFT_CHECK(!(config_.load_in_4bit() && d.zero_stage == 3),
            "{}: distributed.zero_stage 3 with model.load_in_4bit is not available: NF4 already holds the base in a "
            "quarter of bf16's memory; use zero_stage 0, 1 or 2",
            config_.source);
  QFT_CHECK(d.tensor_parallel_size == 1 || d.zero_stage <= 2,
            "{}: distributed.zero_stage {} with tensor_parallel_size {} is not available in this build yet (use "
            "zero_stage 0, 1 or 2: the tensor-parallel shards already divide the base weights)",
            config_.source, d.zero_stage, d.tensor_parallel_size);

}

void Trainer::set_collective_timeout(double seconds) {
  for (parallel::Communicator* c : {&world_, groups_.data.get(), groups_.tensor.get(), gpu_data_.get(), gpu_tensor_.get()})
    if (c != nullptr) c->set_timeout_seconds(seconds);
}

void Trainer::create_groups() {
  grid_ = std::make_unique<parallel::RankGrid>(world_size_, static_cast<int>(config_.distributed.tensor_parallel_size));
  groups_ = parallel::make_parallel_groups(world_, *grid_);
  data_ = groups_.data.get();
  tensor_ = groups_.tensor.get();
  // On GPUs the gradients and activations travel over NCCL (the MPI path would stage them through host
  // memory).
  if (device_.is_cuda() && groups_.data->size() > 1 && parallel::nccl_available()) {
    gpu_data_ = parallel::make_nccl_communicator(*groups_.data, "data-parallel");
    data_ = gpu_data_.get();
  }
  if (device_.is_cuda() && groups_.tensor->size() > 1 && parallel::nccl_available()) {
    gpu_tensor_ = parallel::make_nccl_communicator(*groups_.tensor, "tensor-parallel");
    tensor_ = gpu_tensor_.get();
  }
}

void Trainer::resolve_device_and_dtype() {
  device_ = training_device(config_, local_rank_);
  // Before any allocation: each rank's CUDA work (streams, NCCL, kernels without a device guard) goes to its GPU.
  set_current_cuda_device(device_);
  compute_dtype_ = compute_dtype(config_, device_);
  // fp16 (5 exponent bits) underflows small activation gradients: as HF Trainer with `fp16: true`
  // (accelerate's GradScaler), fp16 compute always trains with dynamic loss scaling. bf16 and fp32 have
  // fp32's exponent range and need none.
  if (compute_dtype_ == at::kHalf) loss_scaler_.emplace();
}

void Trainer::prepare_output_dir() {
  const std::string& dir = config_.output.output_dir;
  const bool resuming = !config_.training.resume_from_checkpoint.empty();
  // Checked on every rank (same file system), so no rank waits in the barrier for one that failed.
  const bool occupied = !resuming && holds_training_output(dir);
  QFT_CHECK(!occupied || config_.output.overwrite_output_dir,
            "{}: output.output_dir '{}' already holds a training run; set output.overwrite_output_dir: true to "
            "replace it, or training.resume_from_checkpoint to continue it",
            config_.source, dir);
  world_.barrier();
  if (rank_ == 0) {
    if (occupied) remove_training_output(dir);
    fs::create_directories(dir);
  }
  world_.barrier();
}

int64_t Trainer::checkpointed_layers() const {
  const TrainingOptions& t = config_.training;
  const int64_t L = model_config_.num_hidden_layers;
  if (!t.gradient_checkpointing || t.recompute_granularity != "full") return 0;
  return t.recompute_num_layers < 0 ? L : t.recompute_num_layers;
}

void Trainer::check_memory(int64_t longest_row) {
  const TrainingOptions& t = config_.training;
  ActivationShape shape;
  const int64_t T = grid_->tensor_parallel_size();
  shape.config = tensor_parallel() ? parallel::local_config(model_config_, T) : model_config_;
  const int64_t multiple = config_.distributed.sequence_parallel ? T : 1;
  shape.tokens = t.per_device_train_batch_size * ((longest_row + multiple - 1) / multiple * multiple);
  shape.tensor_parallel_size = T;
  shape.sequence_parallel = config_.distributed.sequence_parallel;
  shape.gradient_checkpointing = t.gradient_checkpointing && t.recompute_granularity == "full";
  shape.selective_recompute = t.gradient_checkpointing && t.recompute_granularity == "selective";
  shape.recompute_num_layers = checkpointed_layers();
  shape.checkpoint_residuals = t.checkpoint_residuals;
  shape.lora_r = full_finetuning_ ? 0 : lora_->config.r;
  shape.activation_bytes = at::elementSize(compute_dtype_);
  shape.loss_chunk_tokens = t.loss_chunk_tokens;
  shape.tiled_mlp = t.tiled_mlp;
  shape.tiled_mlp_num_shards = t.tiled_mlp_num_shards;
  shape.offloaded_layers = activation_offload_ ? activation_offload_->offloaded_layers() : 0;
  const DeviceMemory now = device_memory(device_);
  MemoryPlan plan;
  plan.state_bytes = now.allocated;
  plan.activation_bytes = estimate_activation_bytes(shape);
  plan.host_bytes = estimate_offloaded_bytes(shape);
  if (plan.host_bytes > 0) {  // the same on every rank: a collective is safe
    // Ranks per node, assuming every node runs as many (launchers start them so): each node's first rank
    // counts one node.
    const int64_t nodes = world_.all_reduce_sum(static_cast<int64_t>(local_rank_ == 0 ? 1 : 0));
    plan.host_ranks = std::max<int64_t>(1, world_.size() / std::max<int64_t>(1, nodes));
    plan.host_total_bytes = host_physical_bytes();
  }
  plan.tokens = shape.tokens;
  plan.device_total_bytes = now.total;
  plan.device_free_bytes = now.free;
  if (rank_ == 0) spdlog::info("{}", describe(plan));
  QFT_CHECK(!clearly_too_large(plan),
            "{}: this run cannot fit the GPU ({}). The longest row has {} tokens; lower "
            "training.per_device_train_batch_size or the data's max_seq_length, set training.gradient_checkpointing: "
            "true (and for long rows training.tiled_mlp, training.activation_offloading), or shard more "
            "(distributed.zero_stage, tensor_parallel_size, sequence_parallel)",
            config_.source, describe(plan), longest_row);
  QFT_CHECK(!host_too_large(plan),
            "{}: the offloaded layer inputs do not fit the node's memory ({}). The longest row has {} tokens; "
            "offload fewer layers (training.activation_offloading_layers) or shorten the rows",
            config_.source, describe(plan), longest_row);
}

void Trainer::create_trainable_state(const std::string& resume_dir) {
  const int stage = zero_stage();
  const int dp = groups_.data->size();
  FlatStorage storage;
  storage.gradients = stage < 2;  // stages 2/3: gradient slots and a shard (below)
  if (full_finetuning_) {
    if (stage == 3) storage.only_shard = groups_.data->rank();
    flat_ = std::make_unique<FlatParameters>(model_->weights().named_tensors(model_config_), device_, decays, dp,
                                             storage);
  } else {
    const std::string adapter_dir = !resume_dir.empty() ? resume_dir : config_.lora.adapter_name_or_path;
    model::LoraWeights initial;
    if (!adapter_dir.empty()) {
      initial = hf::load_peft_adapter(adapter_dir, model_config_, device_);
      // Dropout is a training choice, not part of the stored adapter.
      initial.config.lora_dropout = config_.lora.lora_dropout;
    } else {
      model::LoraConfig lora_config;
      lora_config.r = config_.lora.r;
      lora_config.lora_alpha = config_.lora.lora_alpha;
      lora_config.lora_dropout = config_.lora.lora_dropout;
      lora_config.use_rslora = config_.lora.use_rslora;
      try {
        lora_config.target_modules =
            model::resolve_target_modules(config_.lora.target_modules, model_config_.num_hidden_layers);
      } catch (const Error& e) {
        fail("{}: lora.target_modules: {}", config_.source, e.what());
      }
      initial = model::LoraWeights::init(model_config_, lora_config, static_cast<uint64_t>(config_.training.seed),
                                         device_, model::parse_lora_init(config_.lora.init_lora_weights));
    }
    // Initialised (or loaded) whole on every rank, then cut, so a tensor-parallel run starts from the very
    // adapter a single GPU would.
    if (tensor_parallel()) initial = parallel::shard_lora(initial, groups_.tensor->rank(), groups_.tensor->size());
    // LoRA weights decay like any other weight (HF: no norm or bias among them).
    flat_ = std::make_unique<FlatParameters>(initial.named_tensors(), device_,
                                             [](const std::string&) { return true; }, dp, storage);
    lora_ = initial.with_tensors([&](size_t i) { return flat_->param(i); });
  }
  shards_ = parallel::split_evenly(flat_->numel(), dp);

  // Where the model writes gradients: the flat gradient buffer (stages 0/1) or the per-layer slots.
  const parallel::LayerLayout layout = trainable_layout();
  if (stage >= 2) {
    gradient_slots_ = std::make_unique<parallel::LayerSlots>(
        layout, at::TensorOptions().dtype(at::kFloat).device(device_), /*with_resident=*/true);
  }
  auto gradient_of = [&](size_t i) {
    const FlatParameters::Entry& e = flat_->entries()[i];
    return stage >= 2 ? gradient_slots_->view(e.range).view(e.shape) : flat_->grad(i);
  };
  if (full_finetuning_) {
    grads_.weights = model_->weights().with_tensors(model_config_, gradient_of);
  } else {
    grads_.lora = lora_->with_tensors(gradient_of);
  }
  // Tensor parallelism's partial sums (the replicated LoRA factors) are summed over its group after the
  // data-parallel sums: both are sums, so the order does not matter and the data-parallel ones overlap
  // backward here too.
  reducer_ = std::make_unique<parallel::GradientReducer>(*data_, stage, shards_, layout,
                                                         stage >= 2 ? at::Tensor() : flat_->grads(),
                                                         gradient_slots_.get(), /*overlap=*/true,
                                                         static_cast<int64_t>(config_.distributed.ddp_bucket_cap_mb *
                                                                              1024 * 1024 / sizeof(float)));
  if (tensor_parallel()) {
    // Where the replicated LoRA factors lie in the flat buffer (the same on every tensor-parallel rank:
    // their shards have equal shapes).
    const int64_t base = flat_->params().storage_offset();
    for (const at::Tensor& t : parallel::partial_lora_gradients(*lora_))
      tensor_replicated_.push_back({t.storage_offset() - base, t.storage_offset() - base + t.numel()});
  }

  // The compute weights.
  if (full_finetuning_ && stage == 3) {
    // Each rank keeps its shard of the masters and of their compute-dtype copy; a layer's weights are
    // gathered into a slot before it runs; embed_tokens, norm and lm_head are gathered whole.
    weight_slots_ = std::make_unique<parallel::LayerSlots>(
        layout, at::TensorOptions().dtype(compute_dtype_).device(device_), /*with_resident=*/true);
    weight_shard_ = compute_dtype_ == at::kFloat ? flat_->params() : flat_->params().to(compute_dtype_);
    gatherer_ = std::make_unique<parallel::LayerWeightGatherer>(*data_, shards_, weight_shard_, *weight_slots_);
    model_->weights() = model_->weights().with_tensors(model_config_, [&](size_t i) {
      const FlatParameters::Entry& e = flat_->entries()[i];
      return weight_slots_->view(e.range).view(e.shape);
    });
    gatherer_->gather_resident();
  } else if (full_finetuning_ && compute_dtype_ == at::kFloat) {
    // fp32 compute weights on the masters' device are the masters themselves: one copy, updated in place.
    model_->weights() = model_->weights().with_tensors(model_config_, [&](size_t i) { return flat_->param(i); });
  } else if (stage == 3) {
    shard_base_weights();
  }

  AdamWOptions options;
  options.beta1 = config_.training.adam_beta1;
  options.beta2 = config_.training.adam_beta2;
  options.eps = config_.training.adam_epsilon;
  options.weight_decay = config_.training.weight_decay;
  const parallel::Range owned = stage == 0 ? parallel::Range{0, flat_->numel()} : shards_[groups_.data->rank()];
  optimizer_ = std::make_unique<AdamW>(options, owned, flat_->no_decay_ranges(owned), device_);
}

parallel::LayerLayout Trainer::trainable_layout() const {
  std::vector<std::pair<std::string, parallel::Range>> entries;
  for (const FlatParameters::Entry& e : flat_->entries()) entries.emplace_back(e.name, e.range);
  return parallel::LayerLayout::from_entries(entries, flat_->numel(), model_config_.num_hidden_layers);
}

void Trainer::shard_base_weights() {
  QFT_CHECK(!model::has_nf4_projections(model_->weights()),
            "{}: distributed.zero_stage 3 with a 4-bit base (model.load_in_4bit or a bitsandbytes checkpoint) is "
            "not available: NF4 already holds the base in a quarter of bf16's memory; use zero_stage 0, 1 or 2",
            config_.source);
  const int dp = groups_.data->size();
  const auto base = model_->weights().named_tensors(model_config_);
  std::vector<std::pair<std::string, parallel::Range>> entries;
  int64_t offset = 0;
  for (const auto& [name, t] : base) {
    entries.emplace_back(name, parallel::Range{offset, offset + t.numel()});
    offset += t.numel();
  }
  const int64_t padded = (offset + dp - 1) / dp * dp;
  const std::vector<parallel::Range> base_shards = parallel::split_evenly(padded, dp);
  const parallel::Range own = base_shards[groups_.data->rank()];
  weight_shard_ = at::zeros({own.size()}, at::TensorOptions().dtype(compute_dtype_).device(device_));
  for (size_t i = 0; i < base.size(); ++i) {
    const parallel::Range r = entries[i].second;
    const int64_t begin = std::max(r.begin, own.begin), end = std::min(r.end, own.end);
    if (begin < end)
      weight_shard_.narrow(0, begin - own.begin, end - begin)
          .copy_(base[i].second.reshape({-1}).narrow(0, begin - r.begin, end - begin));
  }
  const parallel::LayerLayout layout =
      parallel::LayerLayout::from_entries(entries, padded, model_config_.num_hidden_layers);
  weight_slots_ = std::make_unique<parallel::LayerSlots>(
      layout, at::TensorOptions().dtype(compute_dtype_).device(device_), /*with_resident=*/false);
  // The whole layers are dropped here; embed_tokens, norm and lm_head stay as loaded.
  model_->weights() = model_->weights().with_tensors(model_config_, [&](size_t i) {
    const parallel::Range r = entries[i].second;
    return layout.layer_containing(r) >= 0 ? weight_slots_->view(r).view(base[i].second.sizes())
                                           : base[i].second.to(device_);
  });
  gatherer_ = std::make_unique<parallel::LayerWeightGatherer>(*data_, base_shards, weight_shard_, *weight_slots_);
}

model::LayerHooks Trainer::layer_hooks(bool training) {
  model::LayerHooks hooks;
  parallel::LayerWeightGatherer* gatherer = gatherer_.get();
  parallel::GradientReducer* reducer = training ? reducer_.get() : nullptr;
  if (gatherer == nullptr && reducer == nullptr) return hooks;
  hooks.before_layer = [gatherer, reducer](int64_t layer, model::LayerPass pass) {
    if (gatherer != nullptr) gatherer->before_layer(layer, pass);
    if (reducer != nullptr && pass == model::LayerPass::backward) reducer->before_backward(layer);
  };
  if (reducer != nullptr) hooks.after_backward = [reducer](int64_t layer) { reducer->layer_done(layer); };
  return hooks;
}

void Trainer::restore_checkpoint(const std::string& resume_dir) {
  const TrainerState state = read_trainer_state(resume_dir);
  const nlohmann::json saved_fingerprint = without_batch_shape(state.config_fingerprint);
  const nlohmann::json fingerprint = without_batch_shape(config_.math_fingerprint());
  if (saved_fingerprint != fingerprint) {
    std::string list;
    for (const auto& d : fingerprint_differences(saved_fingerprint, fingerprint)) list += "\n  " + d;
    fail("{}: the checkpoint {} was trained with a different config (checkpoint vs now):{}", config_.source,
         resume_dir, list);
  }
  const TrainingOptions& t = config_.training;
  const int64_t tensor_size = grid_->tensor_parallel_size(), data_size = grid_->data_parallel_size();
  QFT_CHECK(state.tensor_parallel_size == tensor_size,
            "{}: distributed.tensor_parallel_size is {}, but the checkpoint {} was written with {}: its adapter and "
            "optimizer shards cannot be resharded to another tensor-parallel size (resume with "
            "tensor_parallel_size: {})",
            config_.source, tensor_size, resume_dir, state.tensor_parallel_size, state.tensor_parallel_size);
  // Each step must see the same rows (the data plan cuts every epoch into micro-batches of the per-device
  // batch and gives a step per_device x accumulation x data-parallel consecutive rows, however they are
  // split over ranks), so only accumulation and the data-parallel size may trade places.
  QFT_CHECK(state.per_device_train_batch_size == t.per_device_train_batch_size,
            "{}: training.per_device_train_batch_size is {}, but the checkpoint {} was trained with {}; a resume "
            "keeps the micro-batch (with another data-parallel size, change gradient_accumulation_steps)",
            config_.source, t.per_device_train_batch_size, resume_dir, state.per_device_train_batch_size);
  const int64_t saved_batch = state.gradient_accumulation_steps * state.data_parallel_size;
  const int64_t batch = t.gradient_accumulation_steps * data_size;
  if (saved_batch != batch) {
    const std::string hint = saved_batch % data_size == 0
                                 ? fmt::format("; with {} data-parallel ranks set gradient_accumulation_steps: {}",
                                               data_size, saved_batch / data_size)
                                 : "";
    fail("{}: training.gradient_accumulation_steps x data-parallel ranks is {} x {} = {}, but the checkpoint {} was "
         "trained with {} x {} = {}: a resume keeps the global batch (per_device_train_batch_size x "
         "gradient_accumulation_steps x data-parallel ranks), so that every step sees the same rows{}",
         config_.source, t.gradient_accumulation_steps, data_size, batch, resume_dir, state.gradient_accumulation_steps,
         state.data_parallel_size, saved_batch, hint);
  }
  // A checkpoint at the last step is a run killed before its final save: resuming writes that save.
  QFT_CHECK(state.global_step <= total_steps_, "{}: the checkpoint {} is at step {}, the run has only {} steps",
            config_.source, resume_dir, state.global_step, total_steps_);
  // LoRA adapters came from the checkpoint's adapter files already; full fine-tuning restores the fp32
  // masters stored with the optimizer state. Each rank reads only its own range, from whichever shards
  // of the old grid hold it.
  if (loss_scaler_ && !state.loss_scaler.is_null()) {
    loss_scaler_->restore(state.loss_scaler, (fs::path(resume_dir) / "trainer_state.json").string());
  }
  const parallel::Range owned = optimizer_->owned();
  at::Tensor exp_avg = at::zeros({owned.size()}, at::kFloat), exp_avg_sq = at::zeros({owned.size()}, at::kFloat);
  at::Tensor masters;
  if (full_finetuning_) masters = owned_params().to(at::kCPU).clone();
  const int64_t step = read_optimizer_shards(resume_dir, groups_.tensor->rank(), tensor_size, flat_->entries(), owned,
                                             exp_avg, exp_avg_sq, masters);
  // fp16 steps skipped on overflow advanced the trainer's step but not AdamW's.
  const int64_t skipped = loss_scaler_ ? loss_scaler_->skipped_steps() : 0;
  QFT_CHECK(step + skipped == state.global_step,
            "{}: optimizer step {} ({} skipped on fp16 overflow) but trainer step {}", resume_dir, step, skipped,
            state.global_step);
  optimizer_->exp_avg().copy_(exp_avg);
  optimizer_->exp_avg_sq().copy_(exp_avg_sq);
  optimizer_->set_step_count(step);
  if (full_finetuning_) {
    owned_params().copy_(masters);
    // Where this rank stores more masters than it owns (ZeRO 1/2), the other ranges come from the ranks
    // that own them; ZeRO-3 stores only the owned range.
    if (flat_->stored().size() != owned.size()) data_->all_gather(flat_->params(), shards_);
    refresh_compute_weights();
  }
  start_step_ = state.global_step;
  for (const auto& row : state.log_history) {
    if (row.at("step").get<int64_t>() <= start_step_) log_history_.push_back(row);
  }
  if (rank_ == 0) spdlog::info("resumed from {} at step {}", resume_dir, start_step_);
}

const std::vector<at::Tensor>& Trainer::gradient_views() {
  // The gradient buffer never moves: its views are made once (at 8B, 504 of them cost ~1.5 ms a step).
  if (gradient_views_.empty())
    for (size_t i = 0; i < flat_->entries().size(); ++i) gradient_views_.push_back(flat_->grad(i));
  return gradient_views_;
}

Trainer::StepInput Trainer::read_step_input(int64_t step) {
  const auto micro_batches = plan_->micro_batches(step, groups_.data->rank());
  // This rank reads only the rows of its own micro-batches.
  std::vector<int64_t> wanted;
  for (const auto& rows : micro_batches) wanted.insert(wanted.end(), rows.begin(), rows.end());
  const std::vector<TokenRow> step_rows = rows_->read(wanted);

  StepInput in;
  in.step = step;
  // The loss of a step is the mean over all its target tokens, so the denominator is known before the
  // first micro-batch: count on every rank, sum over ranks.
  for (const TokenRow& row : step_rows) {
    in.local_targets += row.target_tokens;
    in.local_tokens += static_cast<int64_t>(row.input_ids.size());
  }
  // Sums over the data-parallel ranks: tensor-parallel peers see the same rows and the same loss.
  in.global_targets = groups_.data->all_reduce_sum(in.local_targets);
  size_t next_row = 0;
  for (const auto& micro : micro_batches) {
    std::vector<const TokenRow*> rows;
    for (size_t i = 0; i < micro.size(); ++i) rows.push_back(&step_rows[next_row++]);
    // Sequence parallelism splits the micro-batch's tokens evenly over the tensor-parallel ranks.
    in.micro_batches.push_back(
        collate_rows(rows, config_.distributed.sequence_parallel ? grid_->tensor_parallel_size() : 1));
  }
  return in;
}

Trainer::StepMetrics Trainer::run_step(int64_t step) {
  const TrainingOptions& t = config_.training;
  StepInput in = next_input_ && next_input_->step == step ? std::move(*next_input_) : read_step_input(step);
  next_input_.reset();
  parallel::Communicator& data_scalars = *groups_.data;
  const int64_t global_targets = in.global_targets;
  QFT_CHECK(global_targets > 0, "step {}: no target tokens in the step's rows (every label is -100)", step + 1);

  if (flat_->has_gradients()) flat_->grads().zero_();
  reducer_->start_step();
  // The adapters in the compute dtype, cast once for every micro-batch of the step: the fp32 masters
  // change only in the optimizer update at the end of a step, which refreshes the cast right after it
  // (restore_checkpoint writes them before the first step, load_best_model_at_end after the last).
  if (!full_finetuning_ && !lora_compute_) refresh_lora_compute();
  // Under ZeRO-2/3 every micro-batch runs collectives per layer, so a rank with fewer micro-batches (an
  // epoch's last step) runs filler ones that add nothing.
  const size_t micro_batch_count =
      zero_stage() >= 2 ? static_cast<size_t>(plan_->max_micro_batches(step)) : in.micro_batches.size();

  // The step's loss stays on the device until its update is queued.
  at::Tensor local_loss_sum;
  int64_t model_targets = 0;
  for (size_t m = 0; m < micro_batch_count; ++m) {
    const model::Batch batch =
        m < in.micro_batches.size()
            ? std::move(in.micro_batches[m])
            : filler_batch(config_.distributed.sequence_parallel ? grid_->tensor_parallel_size() : 1);
    model::StepOptions options;
    const bool selective = t.recompute_granularity == "selective";
    options.gradient_checkpointing = t.gradient_checkpointing && !selective;
    options.selective_recompute = t.gradient_checkpointing && selective;
    options.recompute_num_layers = t.recompute_num_layers;
    options.checkpoint_residuals = t.checkpoint_residuals;
    // fp16: dividing the denominator by the loss scale multiplies every gradient by it.
    options.loss_denominator = static_cast<double>(global_targets) / (loss_scaler_ ? loss_scaler_->scale() : 1.0);
    options.train_lora_dropout = true;
    // Tensor-parallel peers share the micro-step, so their dropout masks agree.
    const uint64_t micro_step =
        (static_cast<uint64_t>(step) * t.gradient_accumulation_steps + m) * groups_.data->size() +
        groups_.data->rank();
    options.dropout_seed = mix_seed(static_cast<uint64_t>(t.seed), micro_step);
    options.loss_chunk_tokens = t.loss_chunk_tokens;
    options.tiled_mlp = t.tiled_mlp;
    options.tiled_mlp_num_shards = t.tiled_mlp_num_shards;
    options.activation_offload = activation_offload_.get();
    reducer_->start_micro_batch(m + 1 == micro_batch_count);
    options.hooks = layer_hooks(/*training=*/true);
    options.read_loss = false;
    options.lora_compute = full_finetuning_ ? nullptr : &*lora_compute_;
    const model::LoraWeights* adapters = full_finetuning_ ? nullptr : &*lora_;
    const model::LossSum result =
        tensor_parallel() ? parallel::tensor_parallel_forward_backward(model_config_, model_->weights(), batch,
                                                                       adapters, grads_, options, *tensor_,
                                                                       config_.distributed.sequence_parallel)
                          : model_->forward_backward(batch, adapters, grads_, options);
    // A filler micro-batch has no targets (and a zero loss).
    local_loss_sum = local_loss_sum.defined() ? local_loss_sum + result.loss : result.loss;
    model_targets += result.target_tokens;
  }
  QFT_CHECK(model_targets == in.local_targets,
            "step {}: the model counted {} target tokens, the data {} (labels at packed-segment starts must be -100)",
            step + 1, model_targets, in.local_targets);
  // The data-parallel sums (most of them already started during backward).
  reducer_->finish();

  StepMetrics out;
  out.input_tokens = data_scalars.all_reduce_sum(in.local_tokens);
  // The step's mean loss: the sum read from the device (waiting for it), summed over the ranks.
  auto read_loss = [&] {
    const double local = local_loss_sum.defined() ? local_loss_sum.item<double>() : 0.0;  // none: no micro-batch
    return data_scalars.all_reduce_sum(local) / static_cast<double>(global_targets);
  };
  // fp16: a non-finite loss is an overflow like a non-finite gradient (GradScaler finds the gradients
  // of such a loss non-finite): the step is skipped and the scale backs off. Every rank holds the same
  // summed loss, so all take the same branch. Loss scaling decides before the update, so it reads the
  // loss now; without it the loss is read once the update is queued.
  if (loss_scaler_) out.loss = read_loss();
  if (loss_scaler_ && (!std::isfinite(out.loss) || unscale_gradients_found_inf())) {
    // The skipped step: no clipping or update (every rank agreed on found_inf).
    out.learning_rate = schedule_->learning_rate(scheduler_step(step));
    out.grad_norm = std::numeric_limits<double>::quiet_NaN();  // none: trainer_log.jsonl shows null
    loss_scaler_->update(true);
    return out;
  }
  // Each rank's gradients are already divided by the global token count: summing them gives the
  // gradient of the global mean loss.
  out.learning_rate = schedule_->learning_rate(scheduler_step(step));
  if (loss_scaler_) loss_scaler_->update(false);  // the scale is not read again this step
  const int stage = zero_stage();
  at::Tensor grad_norm;  // on the device, read after the update is queued (ZeRO-0 without tensor parallelism)
  if (stage == 0 && tensor_parallel()) {
    // The replicated adapter factors hold partial sums on each tensor-parallel rank: sum them too.
    parallel::sum_partial_gradients(parallel::partial_gradients(grads_, config_.distributed.sequence_parallel),
                                    *tensor_);
    out.grad_norm = std::sqrt(parallel::tensor_parallel_grad_norm_squared(grads_, *tensor_));
    if (t.max_grad_norm > 0) flat_->grads().mul_(std::min(1.0, t.max_grad_norm / (out.grad_norm + 1e-6)));
    optimizer_->step(flat_->params(), flat_->grads(), out.learning_rate);
  } else if (stage == 0) {
    // Norm and clip on the device: the update is queued without waiting for the GPU.
    grad_norm = clip_grad_norm(gradient_views(), t.max_grad_norm);
    optimizer_->step(flat_->params(), flat_->grads(), out.learning_rate);
  } else {
    // Each data-parallel rank holds the summed gradients of its own slice and updates that slice of the
    // parameters with the optimizer state it alone holds.
    at::Tensor own = owned_gradients();
    double squares = 0.0;
    if (tensor_parallel()) {
      // The replicated adapter factors in the slice hold partial sums on each tensor-parallel rank: sum
      // them, and count them once in the norm.
      const parallel::Range owned = optimizer_->owned();
      std::vector<at::Tensor> replicated;
      for (const parallel::Range& r : tensor_replicated_) {
        const int64_t begin = std::max(r.begin, owned.begin), end = std::min(r.end, owned.end);
        if (begin < end) replicated.push_back(own.narrow(0, begin - owned.begin, end - begin));
      }
      parallel::sum_partial_gradients(replicated, *tensor_);
      squares = squared_norm(own);
      if (groups_.tensor->rank() != 0)
        for (const at::Tensor& r : replicated) squares -= squared_norm(r);
      squares = groups_.tensor->all_reduce_sum(groups_.data->all_reduce_sum(squares));
    } else {
      squares = data_->all_reduce_sum(squared_norm(own));
    }
    out.grad_norm = std::sqrt(squares);
    if (t.max_grad_norm > 0) own.mul_(std::min(1.0, t.max_grad_norm / (out.grad_norm + 1e-6)));
    optimizer_->step_owned(owned_params(), own, out.learning_rate);
    // The updated slices gathered back, unless each rank keeps only its own (ZeRO-3 full fine-tuning).
    if (flat_->stored().size() == flat_->numel()) data_->all_gather(flat_->params(), shards_);
  }
  if (full_finetuning_) refresh_compute_weights();
  if (!full_finetuning_) refresh_lora_compute();  // queued now, while the GPU is busy
  // The next step's rows are read and collated while the GPU works through this step's queue.
  if (step + 1 < total_steps_) next_input_ = read_step_input(step + 1);
  if (!loss_scaler_) out.loss = read_loss();
  if (grad_norm.defined()) out.grad_norm = grad_norm.item<double>();
  // A non-finite loss or gradient ends the run (fp16 skipped such steps above). The update already
  // queued is never saved: the run stops here.
  QFT_CHECK(std::isfinite(out.loss),
            "step {}: the loss is {}; training stopped and no final adapter or model was written "
            "(lower training.learning_rate or check the data)",
            step + 1, out.loss);
  check_grad_norm(out.grad_norm, out.loss, step);
  return out;
}

bool Trainer::unscale_gradients_found_inf() {
  // torch's GradScaler.unscale_ multiplies by the fp32 reciprocal of the scale and flags a non-finite
  // gradient, on the data-parallel sums (the reducer has summed them by now) that this rank's optimizer
  // reads: the whole buffer (ZeRO-0), its slice of it (ZeRO-1) or its shard (ZeRO-2/3). The flag is
  // summed over all ranks (the slices and shards differ, and tensor-parallel peers hold different
  // shards), so every rank skips the same steps.
  const int64_t local_inf = loss_scaler_->unscale_and_check({owned_gradients()}) ? 1 : 0;
  return world_.all_reduce_sum(local_inf) > 0;
}

int64_t Trainer::scheduler_step(int64_t step) const {
  // HF Trainer (transformers 5, _inner_training_loop) calls lr_scheduler.step() only when
  // `not accelerator.optimizer_step_was_skipped` (accelerate: the GradScaler's scale went down), while
  // global_step advances on every step: a skipped step counts for logging, saving, evaluation and the
  // run length, but the schedule (and AdamW's bias-correction step count) lags by the skipped steps.
  return loss_scaler_ ? step - loss_scaler_->skipped_steps() : step;
}

void Trainer::refresh_lora_compute() {
  if (!(lora_compute_ && lora_compute_->refresh(*lora_)))
    lora_compute_ = model::LoraCompute::make(*lora_, compute_dtype_);
}

void Trainer::refresh_compute_weights() {
  if (gatherer_) {
    // ZeRO-3: the compute shard follows the masters' shard; the layers are gathered again when next used.
    if (compute_dtype_ != at::kFloat) weight_shard_.copy_(flat_->params());
    gatherer_->invalidate();
    gatherer_->gather_resident();
    return;
  }
  // A no-op where the compute weights are the masters' own views (fp32).
  if (compute_dtype_ == at::kFloat) return;
  const auto compute = model_->weights().named_tensors(model_config_);
  for (size_t i = 0; i < compute.size(); ++i) compute[i].second.copy_(flat_->param(i));
}

void Trainer::log_step(int64_t step, const StepMetrics& result, double interval_seconds) {
  const int64_t global_step = step + 1;
  nlohmann::json row;
  row["step"] = global_step;
  // As HF: the mean of the step losses since the previous log line.
  row["loss"] = interval_loss_sum_ / static_cast<double>(interval_steps_);
  // null on an fp16 step skipped on overflow (NaN in memory would differ from what the file reads back).
  row["grad_norm"] = std::isnan(result.grad_norm) ? nlohmann::json(nullptr) : nlohmann::json(result.grad_norm);
  row["learning_rate"] = result.learning_rate;
  row["epoch"] = plan_->epoch_after(step);
  row["tokens_per_second"] = interval_seconds > 0 ? static_cast<double>(interval_tokens_) / interval_seconds : 0.0;
  row["peak_memory_bytes"] = peak_memory_bytes(device_);
  // fp16: the loss scale after this step's update (HF logs none; it shows overflow backoffs and growth).
  if (loss_scaler_) row["loss_scale"] = loss_scaler_->scale();
  append_log_row(row);
}

void Trainer::append_log_row(const nlohmann::json& row) {
  log_history_.push_back(row);
  if (rank_ == 0) {
    std::ofstream log((fs::path(config_.output.output_dir) / kLogFile).string(), std::ios::app);
    log << row.dump() << "\n";
    log.flush();
    QFT_CHECK(log.good(), "{}: cannot append to {}", config_.output.output_dir, kLogFile);
  }
  recorder_->on_log(row);
}

at::Tensor Trainer::owned_gradients() {
  if (zero_stage() >= 2) return reducer_->shard();
  const parallel::Range owned = optimizer_->owned();
  return flat_->grads().narrow(0, owned.begin, owned.size());  // stage 0: the whole buffer
}

at::Tensor Trainer::owned_params() const {
  const parallel::Range owned = optimizer_->owned(), stored = flat_->stored();
  QFT_CHECK(stored.begin <= owned.begin && owned.end <= stored.end,
            "this rank stores the masters of [{}, {}), not its owned range [{}, {})", stored.begin, stored.end,
            owned.begin, owned.end);
  return flat_->params().narrow(0, owned.begin - stored.begin, owned.size());
}

model::LoraWeights Trainer::whole_adapter() {
  return tensor_parallel() ? parallel::gather_lora(*lora_, *tensor_) : *lora_;
}

at::ScalarType Trainer::stored_dtype() const {
  return hf::parse_dtype(model_config_.torch_dtype, "config.json torch_dtype");
}

io::NamedTensors Trainer::gathered_masters(at::ScalarType dtype) {
  io::NamedTensors out;
  const parallel::Range stored = flat_->stored();
  for (size_t i = 0; i < flat_->entries().size(); ++i) {
    const FlatParameters::Entry& e = flat_->entries()[i];
    at::Tensor whole;
    if (stored.size() == flat_->numel()) {
      whole = flat_->param(i);
    } else {
      // ZeRO-3: the entry's pieces are on the ranks whose shards it crosses; every rank takes part in every
      // entry's gather, also where its shard holds none of it.
      whole = at::zeros({e.range.size()}, flat_->params().options());
      parallel::gather_span_async(*data_, shards_, flat_->params(), e.range, whole)->wait();
      whole = whole.view(e.shape);
    }
    if (rank_ == 0) out.emplace_back(e.name, whole.to(at::kCPU, dtype));
  }
  return out;
}

void Trainer::save_trainable(const std::string& dir, const model::LoraWeights* adapter,
                             const io::NamedTensors& masters) const {
  if (full_finetuning_) {
    hf::write_hf_model_dir(dir, model_config_, masters, 5000000000ULL);
    hf::copy_tokenizer_files(config_.model.model_name_or_path, dir);
  } else {
    hf::save_peft_adapter(dir, *adapter, config_.model.model_name_or_path, config_.lora.init_lora_weights);
  }
}

void Trainer::save_checkpoint(int64_t global_step) {
  // Ranks write files of different sizes while the others wait: not a hang, so not timed.
  set_collective_timeout(0);
  // Collectives first: every rank takes part.
  const std::optional<model::LoraWeights> adapter =
      full_finetuning_ ? std::nullopt : std::optional<model::LoraWeights>(whole_adapter());
  const io::NamedTensors masters = full_finetuning_ ? gathered_masters(stored_dtype()) : io::NamedTensors{};
  const std::string& output_dir = config_.output.output_dir;
  const std::string name = checkpoint_dir_name(global_step);
  const fs::path final_dir = fs::path(output_dir) / name;
  const std::string tmp_dir = final_dir.string() + ".tmp";
  if (rank_ == 0) {
    remove_interrupted_saves(output_dir);  // a save killed midway leaves its .tmp directory
    fs::create_directories(tmp_dir);
  }
  world_.barrier();
  // Every rank writes the optimizer state it owns (and, for full fine-tuning, the fp32 masters of that
  // range: the model files are in the stored dtype); LoRA's masters are the adapter files. Under ZeRO 0
  // every data-parallel rank owns everything and the first one writes it.
  const bool kill_midway = fault_injected("kill-during-save", rank_, global_step);
  if (config_.distributed.zero_stage > 0 || groups_.data->rank() == 0) {
    ShardLayout layout;
    layout.world_size = world_size_;
    layout.tensor_parallel_size = grid_->tensor_parallel_size();
    layout.tensor_parallel_rank = groups_.tensor->rank();
    layout.data_parallel_size = grid_->data_parallel_size();
    layout.data_parallel_rank = groups_.data->rank();
    layout.zero_stage = config_.distributed.zero_stage;
    layout.step = optimizer_->step_count();
    layout.flat_numel = flat_->numel();
    layout.owned = optimizer_->owned();
    layout.with_masters = full_finetuning_;
    layout.entries = flat_->entries();
    const at::Tensor owned_masters = full_finetuning_ ? owned_params() : at::Tensor();
    write_optimizer_shard((fs::path(tmp_dir) / optimizer_shard_path(layout.data_parallel_rank,
                                                                     layout.tensor_parallel_rank)).string(),
                          layout, optimizer_->exp_avg(), optimizer_->exp_avg_sq(), owned_masters, kill_midway);
  } else if (kill_midway) {
    std::raise(SIGKILL);  // this rank writes no shard: it dies where it would have written one
  }
  // Every shard is on disk: rank 0 completes the directory, renames it into place, then moves `latest`.
  world_.barrier();
  if (rank_ == 0) {
    save_trainable(tmp_dir, adapter ? &*adapter : nullptr, masters);
    TrainerState state;
    state.global_step = global_step;
    state.epoch = plan_->epoch_after(global_step - 1);
    state.world_size = world_size_;
    state.tensor_parallel_size = grid_->tensor_parallel_size();
    state.data_parallel_size = grid_->data_parallel_size();
    state.zero_stage = config_.distributed.zero_stage;
    state.per_device_train_batch_size = config_.training.per_device_train_batch_size;
    state.gradient_accumulation_steps = config_.training.gradient_accumulation_steps;
    state.config_hash = config_.hash();
    state.config_fingerprint = config_.math_fingerprint();
    state.log_history = log_history_;
    if (loss_scaler_) state.loss_scaler = loss_scaler_->to_json();
    write_trainer_state(tmp_dir, state);
    hf::move_into_place(tmp_dir, final_dir.string());
    write_latest(output_dir, name);
    prune_checkpoints(output_dir, config_.output.save_total_limit);
    spdlog::info("saved {}", final_dir.string());
  }
  world_.barrier();
  set_collective_timeout(config_.distributed.collective_timeout);
}

void Trainer::save_final() {
  set_collective_timeout(0);
  const std::optional<model::LoraWeights> adapter =
      full_finetuning_ ? std::nullopt : std::optional<model::LoraWeights>(whole_adapter());
  const io::NamedTensors masters = full_finetuning_ ? gathered_masters(stored_dtype()) : io::NamedTensors{};
  if (rank_ == 0) {
    save_trainable(config_.output.output_dir, adapter ? &*adapter : nullptr, masters);
    spdlog::info("saved the final {} to {}", full_finetuning_ ? "model" : "adapter", config_.output.output_dir);
  }
  world_.barrier();
}

TrainSummary Trainer::train() {
  if (rank_ == 0) {
    // The log restarts from what the checkpoint knew, so a resumed run's file has no steps twice.
    std::string text;
    for (const auto& row : log_history_) text += row.dump() + "\n";
    write_file_atomic((fs::path(config_.output.output_dir) / kLogFile).string(), text);
  }
  auto interval_start = std::chrono::steady_clock::now();
  // From here on every rank does the same work between collectives: a long wait means a rank died or hangs.
  set_collective_timeout(config_.distributed.collective_timeout);
  StepProfiler profiler(config_.training.profile_steps, total_steps_, config_.output.output_dir, rank_, device_);
  try {
    for (int64_t step = start_step_; step < total_steps_; ++step) {
      profiler.before_step(step + 1);
      const StepMetrics result = run_step(step);
      profiler.after_step(step + 1);
      recorder_->on_step(step + 1, result.input_tokens);
      // HF's logging_nan_inf_filter (on by default): a non-finite step loss (an fp16 overflow, skipped)
      // counts as the logging window's sum so far over its steps including this one.
      interval_loss_sum_ += std::isfinite(result.loss) ? result.loss
                                                       : interval_loss_sum_ / static_cast<double>(interval_steps_ + 1);
      interval_steps_ += 1;
      interval_tokens_ += result.input_tokens;
      const int64_t global_step = step + 1;
      if (global_step % config_.training.logging_steps == 0) {
        const auto now = std::chrono::steady_clock::now();
        log_step(step, result, std::chrono::duration<double>(now - interval_start).count());
        interval_loss_sum_ = 0.0;
        interval_steps_ = 0;
        interval_tokens_ = 0;
        interval_start = now;
      }
      if (eval_rows_ && evaluates_after(step)) {
        evaluate_and_log(step);
        interval_start = std::chrono::steady_clock::now();  // evaluation time is not training throughput
      }
      if (config_.training.save_steps > 0 && global_step % config_.training.save_steps == 0) {
        save_checkpoint(global_step);
      }
    }
    if (best_params_.defined()) {
      // load_best_model_at_end: the final adapter/model is the one of the best evaluation.
      flat_->params().copy_(best_params_);
      if (full_finetuning_) refresh_compute_weights();
      if (rank_ == 0) {
        spdlog::info("load_best_model_at_end: the final {} is the one of step {} (eval_loss {:.4f})",
                     full_finetuning_ ? "model" : "adapter", best_step_, best_eval_loss_);
      }
    }
    save_final();
  } catch (const std::exception& e) {
    recorder_->finish(e.what());  // the report of the steps done; the error goes on to the CLI
    throw;
  }
  recorder_->finish();
  TrainSummary summary;
  summary.global_step = total_steps_;
  for (const auto& row : log_history_) summary.log.push_back(row);
  return summary;
}

TrainSummary run_training(const TrainConfig& config, parallel::Communicator& world, int local_rank) {
  Trainer trainer(config, world, local_rank);
  return trainer.train();
}

}  // namespace qft::train
