// The trainer's evaluation during training (eval_strategy, data.val_size, load_best_model_at_end): which
// steps evaluate, the held-out loss over the data-parallel ranks, and the best parameters kept for the end.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "parallel/tp_model.h"
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
  const int64_t batch_size = config_.training.per_device_eval_batch_size;
  std::vector<int64_t> mine;
  for (int64_t r = groups_.data->rank(); r < eval_rows_->size(); r += groups_.data->size()) mine.push_back(r);
  const model::LoraWeights* adapters = full_finetuning_ ? nullptr : &*lora_;
  double loss_sum = 0.0;
  int64_t targets = 0;
  for (size_t b = 0; b < mine.size(); b += static_cast<size_t>(batch_size)) {
    const std::vector<TokenRow> rows = eval_rows_->read(
        std::vector<int64_t>(mine.begin() + b, mine.begin() + std::min(mine.size(), b + batch_size)));
    std::vector<const TokenRow*> pointers;
    for (const TokenRow& row : rows) pointers.push_back(&row);
    const model::Batch batch = collate_rows(pointers, device_);
    const model::LossSum s =
        tensor_parallel() ? parallel::tensor_parallel_forward_loss(model_config_, model_->weights(), batch, adapters,
                                                                   config_.training.loss_chunk_tokens, *tensor_)
                          : model_->forward_loss(batch, adapters, config_.training.loss_chunk_tokens);
    loss_sum += s.loss_sum;
    targets += s.target_tokens;
  }
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
