// The training loop around Qwen3Model: data plan -> micro-batches -> forward_backward with the token
// count of the whole optimizer step as loss denominator (HF num_items_in_batch semantics, so gradient
// accumulation equals one big batch) -> gradient all-reduce -> clipping -> AdamW -> LR schedule ->
// logging (spdlog + output_dir/trainer_log.jsonl) -> checkpoints -> the final adapter or model.
//
// Every rank runs the same code; in a world of one the collectives are no-ops.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/qwen3_model.h"
#include "report/run_recorder.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/data_plan.h"
#include "train/lr_schedule.h"
#include "train/pretokenized.h"
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
  explicit Trainer(TrainConfig config);
  ~Trainer();

  // Trains to the last step and writes the final adapter (LoRA) or model (full) into output_dir.
  // A non-finite loss or gradient norm throws qft::Error naming the step; nothing final is written.
  TrainSummary train();

  int64_t total_steps() const { return total_steps_; }

 private:
  struct StepResult {
    double loss = 0.0;       // mean over the step's target tokens (all micro-batches, all ranks)
    double grad_norm = 0.0;  // before clipping
    double learning_rate = 0.0;
    int64_t input_tokens = 0;  // non-padding tokens, all ranks
  };

  void resolve_device_and_dtype();
  void prepare_output_dir();
  void create_trainable_state(const std::string& resume_dir);
  void restore_checkpoint(const std::string& resume_dir);
  StepResult run_step(int64_t step);
  void refresh_compute_weights();
  void log_step(int64_t step, const StepResult& result, double interval_seconds);
  void save_checkpoint(int64_t global_step);
  void save_trainable(const std::string& dir) const;
  void save_final();
  std::vector<at::Tensor> gradient_tensors() const;

  TrainConfig config_;
  int rank_ = 0;
  int world_size_ = 1;
  at::Device device_ = at::kCPU;
  at::ScalarType compute_dtype_ = at::kFloat;
  bool full_finetuning_ = false;

  model::Qwen3Config model_config_;
  std::unique_ptr<model::Qwen3Model> model_;
  std::vector<TokenRow> rows_;
  std::unique_ptr<DataPlan> plan_;
  std::unique_ptr<LrSchedule> schedule_;
  int64_t total_steps_ = 0;

  // LoRA: the adapters are the fp32 masters. Full: fp32 masters of every base tensor (aliasing the
  // compute weights when those are fp32 on the same device).
  std::optional<model::LoraWeights> lora_;
  std::vector<std::pair<std::string, at::Tensor>> full_masters_;
  model::Gradients grads_;
  std::unique_ptr<AdamW> optimizer_;

  int64_t start_step_ = 0;  // optimizer steps already done (resume)
  nlohmann::json log_history_ = nlohmann::json::array();
  std::unique_ptr<report::RunRecorder> recorder_;  // progress, TensorBoard, qft_config.yaml, report.html
  double interval_loss_sum_ = 0.0;
  int64_t interval_steps_ = 0;
  int64_t interval_tokens_ = 0;
};

// Convenience for the CLI and tests.
TrainSummary run_training(const TrainConfig& config);

}  // namespace qft::train
