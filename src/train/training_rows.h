// What training and evaluation read, whatever the data section says: the rows of the text pipeline's
// token cache (prepared by rank 0 when missing or stale) or of a pretokenized JSONL file; and where they
// run (device and compute dtype from the model section).
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_config.h"
#include "train/pretokenized.h"
#include "train/train_config.h"

namespace qft::train {

// Every row, in the data's order; ids are checked against the model's vocabulary.
std::vector<TokenRow> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config);

// model.device: cpu, cuda (cuda:<local rank>), or auto (cuda when there is one).
at::Device training_device(const TrainConfig& config);
// model.torch_dtype: fp32/bf16/fp16, or auto (bf16 on CUDA, fp32 on CPU).
at::ScalarType compute_dtype(const TrainConfig& config, at::Device device);

}  // namespace qft::train
