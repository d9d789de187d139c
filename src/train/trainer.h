// The training loop around Qwen3Model: data plan -> micro-batches -> forward_backward with the token
// count of the whole optimizer step as loss denominator (HF num_items_in_batch semantics, so gradient
// accumulation equals one big batch) -> data-parallel gradient sums (started during backward, bucket by
// bucket: parallel/zero.h) -> clipping -> AdamW on the rank's range -> LR schedule -> logging (spdlog +
// output_dir/trainer_log.jsonl) -> checkpoints -> the final adapter or model.
//
// Every rank runs the same code; in a world of one the collectives are no-ops. The communicator is passed
// in (main() owns the MPI runtime); trainable parameters and their gradients live in flat buffers
// (flat_parameters.h), so the reductions work on ranges of them and the optimizer steps a range.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/qwen3_model.h"
#include "parallel/communicator.h"
#include "parallel/rank_grid.h"
#include "parallel/zero.h"
#include "report/run_recorder.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/data_plan.h"
#include "train/flat_parameters.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"
#include "train/pretokenized.h"
#include "train/training_rows.h"
#include "train/train_config.h"

namespace qft::train {

struct TrainSummary {
  int64_t global_step = 0;
  std::vector<nlohmann::json> log;  // the trainer_log.jsonl rows of this run (and of the resumed one)
};

class Trainer {
 public:
  // Loads the model, data and trainable state (or the checkpoint to resume); validates everything
  // that can fail before the first step.
  // `world`: every rank of the job; `local_rank`: this rank's place on its node (picks the GPU).
  Trainer(TrainConfig config, parallel::Communicator& world, int local_rank);
  ~Trainer();

  // Trains to the last step and writes the final adapter (LoRA) or model (full) into output_dir.
  // A non-finite loss or gradient norm throws qft::Error naming the step; nothing final is written.
  TrainSummary train();

  int64_t total_steps() const { return total_steps_; }

 private:
  // What one optimizer step reports.
  struct StepMetrics {
    double loss = 0.0;       // mean over the step's target tokens (all micro-batches, all ranks)
    double grad_norm = 0.0;  // before clipping
    double learning_rate = 0.0;
    int64_t input_tokens = 0;  // non-padding tokens, all ranks
  };

  void resolve_device_and_dtype();
  void check_launch() const;
  void create_groups();
  // The watchdog timeout of every MPI group of this rank (0 = none).
  void set_collective_timeout(double seconds);
  void prepare_output_dir();
  void create_trainable_state(const std::string& resume_dir);
  // Layers that gradient checkpointing keeps only the input of (training.recompute_num_layers).
  int64_t checkpointed_layers() const;
  // Logs the memory plan (memory_plan.h) and refuses a run whose largest micro-batch clearly cannot fit.
  void check_memory(int64_t longest_row);
  void restore_checkpoint(const std::string& resume_dir);
  // A step's rows, read and collated on the host. The trainer reads the next step's while the GPU still
  // runs the current one (after its update is queued, before its loss is read), so that reading and
  // collating never leave the GPU idle.
  struct StepInput {
    int64_t step = -1;
    std::vector<model::Batch> micro_batches;  // this rank's, collated
    int64_t local_targets = 0, local_tokens = 0;
    int64_t global_targets = 0;  // over the data-parallel ranks
  };
  StepInput read_step_input(int64_t step);
  StepMetrics run_step(int64_t step);
  // Casts the LoRA masters into lora_compute_ (made at the first call, refreshed in place after that).
  void refresh_lora_compute();
  // fp16: unscales this rank's gradients and says whether any rank's hold an inf or NaN (collective).
  bool unscale_gradients_found_inf();
  // The LR schedule's position at 0-based `step`: behind it by the optimizer steps skipped on overflow.
  int64_t scheduler_step(int64_t step) const;
  void refresh_compute_weights();
  void log_step(int64_t step, const StepMetrics& result, double interval_seconds);
  // Appends a row to the history, trainer_log.jsonl (rank 0) and the run recorder.
  void append_log_row(const nlohmann::json& row);
  // Whether eval_strategy asks for an evaluation after 0-based step `step`.
  bool evaluates_after(int64_t step) const;
  // Mean token loss on the held-out rows, each data-parallel rank taking every dp-th row (collective).
  double evaluate_held_out();
  void evaluate_and_log(int64_t step);
  void save_checkpoint(int64_t global_step);
  // The summed gradients of optimizer_->owned() once the reducer has finished: the whole flat buffer
  // (ZeRO 0), its slice (ZeRO 1) or the reducer's shard (ZeRO 2/3).
  at::Tensor owned_gradients();
  // The fp32 masters of the optimizer's owned range (a view; params() may hold only the stored range).
  at::Tensor owned_params() const;
  // The adapter in the single-GPU layout (gathered from the tensor-parallel shards: collective).
  model::LoraWeights whole_adapter();
  // Rank 0: the adapter, or for full fine-tuning the model from `masters` (gathered_masters).
  void save_trainable(const std::string& dir, const model::LoraWeights* adapter, const io::NamedTensors& masters) const;
  void save_final();
  // Every entry's gradient (views of the flat gradient buffer, made once), for the clipping norm.
  const std::vector<at::Tensor>& gradient_views();
  // ZeRO (src/parallel/zero.h): the flat buffer's entries by decoder layer; the hooks a step (or an
  // evaluation: `training` false) gives the model.
  parallel::LayerLayout trainable_layout() const;
  model::LayerHooks layer_hooks(bool training);
  // ZeRO-3, LoRA: the frozen layers' weights become this rank's shard of them plus two gather slots.
  void shard_base_weights();
  // The whole fp32 master of every trainable tensor, for saving a full fine-tune (collective under ZeRO-3,
  // where each rank stores only its shard); on the CPU in `dtype`, on rank 0 only (others get none).
  io::NamedTensors gathered_masters(at::ScalarType dtype);
  // The dtype a saved full model is written in (config.json torch_dtype).
  at::ScalarType stored_dtype() const;
  int zero_stage() const { return static_cast<int>(config_.distributed.zero_stage); }

  TrainConfig config_;
  parallel::Communicator& world_;  // every rank, MPI: scalars, barriers, agreement checks
  int local_rank_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  std::unique_ptr<parallel::RankGrid> grid_;
  parallel::ParallelGroups groups_;                 // MPI groups split along the grid
  std::unique_ptr<parallel::Communicator> gpu_data_;  // NCCL data-parallel group on GPUs
  parallel::Communicator* data_ = nullptr;          // the data-parallel group gradients travel in
  std::unique_ptr<parallel::Communicator> gpu_tensor_;  // NCCL tensor-parallel group on GPUs
  parallel::Communicator* tensor_ = nullptr;        // the tensor-parallel group activations travel in
  bool tensor_parallel() const { return grid_->tensor_parallel_size() > 1; }
  // ZeRO >= 1: rank r of the data-parallel group owns shards_[r] of the flat buffers (its optimizer state;
  // from stage 2 its gradients; from stage 3 for full fine-tuning its masters).
  std::vector<parallel::Range> shards_;
  std::unique_ptr<parallel::LayerSlots> gradient_slots_;  // stages 2/3: where the model writes a layer's gradients
  std::unique_ptr<parallel::GradientReducer> reducer_;    // every stage: the data-parallel gradient sums
  // Stage 3: the layers' compute weights as this rank's shard (compute dtype) and the slots they are
  // gathered into.
  std::unique_ptr<parallel::LayerSlots> weight_slots_;
  at::Tensor weight_shard_;
  std::unique_ptr<parallel::LayerWeightGatherer> gatherer_;
  // Tensor parallelism: the flat ranges of the LoRA factors every tensor-parallel rank holds whole (A of
  // column-parallel, B of row-parallel projections), whose gradients are per-rank partial sums.
  std::vector<parallel::Range> tensor_replicated_;
  at::Device device_ = at::kCPU;
  at::ScalarType compute_dtype_ = at::kFloat;
  bool full_finetuning_ = false;

  model::Qwen3Config model_config_;
  std::unique_ptr<model::Qwen3Model> model_;
  // training.activation_offloading: the host buffers of the offloaded layer inputs, kept from step to step.
  std::unique_ptr<model::ActivationOffload> activation_offload_;
  std::shared_ptr<const TrainingRows> rows_;       // the rows trained on
  std::shared_ptr<const TrainingRows> eval_rows_;  // data.val_size's held-out rows (null: none)
  // load_best_model_at_end: the best eval_loss so far, its step, and a host copy of the flat parameters then.
  double best_eval_loss_ = 0.0;
  int64_t best_step_ = 0;
  at::Tensor best_params_;
  std::unique_ptr<DataPlan> plan_;
  std::unique_ptr<LrSchedule> schedule_;
  int64_t total_steps_ = 0;

  // The fp32 masters and their gradients, one flat buffer each. LoRA: lora_'s A/B are views of it.
  // Full: the masters of every base tensor; the compute weights are views of it too when they are fp32 on
  // the same device, else a copy refreshed after each update. ZeRO-3 full fine-tuning stores only the
  // rank's shard of the masters (weight_shard_ is its compute copy, gathered per layer).
  std::unique_ptr<FlatParameters> flat_;
  std::optional<model::LoraWeights> lora_;
  // lora_ cast for compute: made at the first step, refreshed in place after each update (LoraCompute::refresh).
  std::optional<model::LoraCompute> lora_compute_;
  std::vector<at::Tensor> gradient_views_;  // gradient_views()
  // The next step's input, read during the current step (run_step); empty before the first.
  std::optional<StepInput> next_input_;
  model::Gradients grads_;  // views of flat_->grads() (ZeRO-2/3: of gradient_slots_)
  std::unique_ptr<AdamW> optimizer_;
  std::optional<LossScaler> loss_scaler_;  // fp16 compute only (dynamic loss scaling)

  int64_t start_step_ = 0;  // optimizer steps already done (resume)
  nlohmann::json log_history_ = nlohmann::json::array();
  std::unique_ptr<report::RunRecorder> recorder_;  // progress, TensorBoard, qft_config.yaml, report.html
  double interval_loss_sum_ = 0.0;
  int64_t interval_steps_ = 0;
  int64_t interval_tokens_ = 0;
};

// Convenience for the CLI and tests.
TrainSummary run_training(const TrainConfig& config, parallel::Communicator& world, int local_rank);

}  // namespace qft::train
