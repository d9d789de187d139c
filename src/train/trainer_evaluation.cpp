// The trainer's evaluation during training (eval_strategy, data.val_size, load_best_model_at_end): which
// steps evaluate, the held-out loss over the data-parallel ranks, and the best parameters kept for the end.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "parallel/tp_model.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace qft::train {

bool Trainer::evaluates_after(int64_t step) const {
  const TrainingOptions& t = config_.training;
  if (t.eval_strategy == "steps") {
    const int64_t every = t.eval_steps > 0 ? t.eval_steps : t.logging_steps;
    return (step + 1) % every == 0;
  }
  // At the end of each epoch, as HF (a run cut by max_steps mid-epoch is not evaluated there).
  return t.eval_strategy == "epoch" && plan_->epoch_of(step + 1) != plan_->epoch_of(step);
}

double Trainer::evaluate_held_out() {
  const model::LoraWeights* adapters = full_finetuning_ ? nullptr : &*lora_;
  const int64_t chunk = config_.training.loss_chunk_tokens;
  const model::LayerHooks hooks = layer_hooks(/*training=*/false);
  // ZeRO-3 gathers layers in every forward: every data-parallel rank makes as many as rank 0 (the most rows).
  const int64_t dp = groups_.data->size(), batch_size = config_.training.per_device_eval_batch_size;
  const int64_t most_batches = ((eval_rows_->size() + dp - 1) / dp + batch_size - 1) / batch_size;
  const LossTotals mine = sum_losses(
      *eval_rows_, groups_.data->rank(), groups_.data->size(), config_.training.per_device_eval_batch_size,
      [&](const model::Batch& batch) {
        return tensor_parallel() ? parallel::tensor_parallel_forward_loss(model_config_, model_->weights(), batch,
                                                                          adapters, chunk, *tensor_)
                                 : model_->forward_loss(batch, adapters, chunk, hooks);
      },
      gatherer_ ? most_batches : 0);
  const double loss_sum = mine.loss_sum;
  const int64_t targets = mine.target_tokens;
  // Tensor-parallel peers computed the same sums: reduce over the data-parallel ranks only.
  const int64_t all_targets = groups_.data->all_reduce_sum(targets);
  QFT_CHECK(all_targets > 0, "{}: the held-out rows (data.val_size) have no target token", config_.source);
  return groups_.data->all_reduce_sum(loss_sum) / static_cast<double>(all_targets);
}

void Trainer::evaluate_and_log(int64_t step) {
  const double eval_loss = evaluate_held_out();
  QFT_CHECK(std::isfinite(eval_loss), "step {}: the evaluation loss is {}; training stopped", step + 1, eval_loss);
  nlohmann::json row;
  row["step"] = step + 1;
  row["epoch"] = plan_->epoch_after(step);
  row["eval_loss"] = eval_loss;
  row["eval_perplexity"] = std::exp(eval_loss);
  row["eval_rows"] = eval_rows_->size();
  append_log_row(row);
  if (config_.training.load_best_model_at_end && (!best_params_.defined() || eval_loss < best_eval_loss_)) {
    best_eval_loss_ = eval_loss;
    best_step_ = step + 1;
    best_params_ = flat_->params().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  }
}

}  // namespace qft::train
