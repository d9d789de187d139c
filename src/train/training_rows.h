// What training and evaluation read, whatever the data section says: the rows of the text pipeline's
// token cache (prepared by rank 0 when missing or stale) or of a pretokenized JSONL file; and where they
// run (device and compute dtype from the model section).
#pragma once

#include <memory>
#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_config.h"
#include "parallel/communicator.h"
#include "train/pretokenized.h"
#include "train/train_config.h"

namespace qft::train {

// The rows of a data section, read on demand: each data-parallel rank reads only the rows it trains on.
class TrainingRows {
 public:
  virtual ~TrainingRows() = default;
  virtual int64_t size() const = 0;
  // Rows `indices`, in that order; ids are checked against the model's vocabulary.
  virtual std::vector<TokenRow> read(const std::vector<int64_t>& indices) const = 0;
};

// Row ids 0..n-1 split into training rows and held-out rows (data.val_size: a fraction in (0, 1) or a
// count), a pure function of (n, val_size, seed); both lists ascending. `source` names the config.
struct RowSplit {
  std::vector<int64_t> train;
  std::vector<int64_t> held_out;
};
RowSplit split_rows(int64_t n, double val_size, uint64_t seed, const std::string& source);

// The rows `indices` of `base`, renumbered 0, 1, ...
std::unique_ptr<TrainingRows> subset_rows(std::shared_ptr<const TrainingRows> base, std::vector<int64_t> indices);

// The rows of the token cache (rank 0 of `world` prepares it while the others wait) or of a pretokenized
// JSONL file (small: read whole).
std::unique_ptr<TrainingRows> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config,
                                                 parallel::Communicator& world);

// model.device: cpu, cuda (cuda:<local_rank>, the rank's place on its node), or auto (cuda when there is one).
at::Device training_device(const TrainConfig& config, int local_rank);
// Makes a CUDA device the current one of this thread (NCCL creates its communicator there); no-op on CPU.
void set_current_cuda_device(at::Device device);
// model.torch_dtype: fp32/bf16/fp16, or auto (bf16 on CUDA, fp32 on CPU).
at::ScalarType compute_dtype(const TrainConfig& config, at::Device device);

}  // namespace qft::train
