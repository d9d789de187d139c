// What training and evaluation read, whatever the data section says: the rows of the text pipeline's
// token cache (prepared by rank 0 when missing or stale) or of a pretokenized JSONL file; and where they
// run (device and compute dtype from the model section).
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_config.h"
#include "parallel/communicator.h"
#include "train/pretokenized.h"
#include "train/train_config.h"

namespace qft::train {

// Every row, in the data's order; ids are checked against the model's vocabulary. Rank 0 of `world`
// prepares the token cache while the others wait.
std::vector<TokenRow> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config,
                                         parallel::Communicator& world);

// model.device: cpu, cuda (cuda:<local_rank>, the rank's place on its node), or auto (cuda when there is one).
at::Device training_device(const TrainConfig& config, int local_rank);
// model.torch_dtype: fp32/bf16/fp16, or auto (bf16 on CUDA, fp32 on CPU).
at::ScalarType compute_dtype(const TrainConfig& config, at::Device device);

}  // namespace qft::train
