// Evaluation: the mean token loss (and perplexity) of a base model, optionally with a PEFT adapter, over
// the rows of a config's data section — the same rows, masks and loss normalisation as training.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "parallel/communicator.h"
#include "train/train_config.h"
#include "train/training_rows.h"

namespace qft::train {

struct EvalResult {
  double loss = 0.0;           // sum of token losses / target tokens, over all ranks
  double perplexity = 0.0;     // exp(loss)
  int64_t rows = 0;
  int64_t target_tokens = 0;
  int64_t input_tokens = 0;    // non-padding
};

// Sums of the loss over rows `first`, `first + stride`, ... of `rows` (one rank's share), in micro-batches of
// `batch_size` rows, each batch's loss computed by `loss_of` (the model's forward, or the tensor-parallel one).
// With `min_batches`, a rank with fewer batches runs filler batches (pretokenized.h) up to that many, so that
// every rank makes as many forward calls (ZeRO-3 gathers layers collectively in each).
struct LossTotals {
  double loss_sum = 0.0;
  int64_t target_tokens = 0;
  int64_t input_tokens = 0;  // non-padding
};
LossTotals sum_losses(const TrainingRows& rows, int64_t first, int64_t stride, int64_t batch_size,
                      const std::function<model::LossSum(const model::Batch&)>& loss_of, int64_t min_batches = 0);

// `adapter_dir` overrides lora.adapter_name_or_path ("" = use it, or none: the base model alone).
// Rows are split over the ranks (row r goes to rank r % world) in batches of per_device_train_batch_size.
EvalResult evaluate(const TrainConfig& config, const std::string& adapter_dir, parallel::Communicator& world,
                    int local_rank);

}  // namespace qft::train
