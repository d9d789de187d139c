#include "train/training_rows.h"

#include <algorithm>
#include <cmath>

#include <ATen/detail/CUDAHooksInterface.h>
#include <spdlog/spdlog.h>
#ifdef QFT_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "core/error.h"
#include "core/splitmix64.h"
#include "data/packed_dataset.h"
#include "data/prepare.h"
#include "hf/dtype_names.h"

namespace qft::train {
namespace {

// Rows of the text pipeline's token cache, read from the HDF5 file when asked for.
class TokenCacheRows final : public TrainingRows {
 public:
  TokenCacheRows(const std::string& cache_path, const data::DataConfig& data_config, int64_t vocab_size,
                 std::string model_dir)
      : cache_path_(cache_path), dataset_(cache_path, data_config.max_seq_length, data_config.packing),
        vocab_size_(vocab_size), model_dir_(std::move(model_dir)) {}

  int64_t size() const override { return dataset_.num_rows(); }

  std::vector<TokenRow> read(const std::vector<int64_t>& indices) const override {
    std::vector<TokenRow> rows;
    rows.reserve(indices.size());
    for (data::RowData& r : dataset_.read_rows(indices)) {
      TokenRow row;
      row.target_tokens = r.target_tokens();
      row.input_ids = std::move(r.input_ids);
      row.labels = std::move(r.labels);
      row.position_ids = std::move(r.position_ids);
      row.segment_ids = std::move(r.segment_ids);
      for (int64_t id : row.input_ids) {
        QFT_CHECK(id >= 0 && id < vocab_size_,
                  "{}: token id {} from the tokenizer is outside the model's vocabulary ({} ids in {}/config.json)",
                  cache_path_, id, vocab_size_, model_dir_);
      }
      rows.push_back(std::move(row));
    }
    return rows;
  }

 private:
  std::string cache_path_;
  data::PackedDataset dataset_;
  int64_t vocab_size_;
  std::string model_dir_;
};

// Rows of a pretokenized JSONL file, all in memory (read_pretokenized_jsonl checked them).
class InMemoryRows final : public TrainingRows {
 public:
  explicit InMemoryRows(std::vector<TokenRow> rows) : rows_(std::move(rows)) {}
  int64_t size() const override { return static_cast<int64_t>(rows_.size()); }
  std::vector<TokenRow> read(const std::vector<int64_t>& indices) const override {
    std::vector<TokenRow> out;
    out.reserve(indices.size());
    for (int64_t i : indices) {
      QFT_CHECK(i >= 0 && i < size(), "row {} is outside [0, {})", i, size());
      out.push_back(rows_[static_cast<size_t>(i)]);
    }
    return out;
  }

 private:
  std::vector<TokenRow> rows_;
};

std::unique_ptr<TrainingRows> load_token_cache_rows(const TrainConfig& config, const model::Qwen3Config& model_config,
                                                    parallel::Communicator& world) {
  const data::DataConfig& data_config = *config.data.pipeline;
  const std::string& cache_path = config.data.token_cache;
  // One writer: rank 0 prepares (or finds up to date) the cache, then every rank opens it.
  if (world.rank() == 0) {
    const data::PrepareReport report = data::prepare_dataset(data_config, config.data.tokenizer);
    QFT_CHECK(report.cache_path == cache_path, "{}: the data or tokenizer changed while loading ({} became {})",
              config.source, cache_path, report.cache_path);
    spdlog::info("token cache {}{}: {} samples, {} tokens, {} target tokens, {} truncated{}", report.cache_path,
                 report.reused ? " (reused)" : "", report.samples, report.tokens, report.target_tokens,
                 report.truncated, report.skipped.empty() ? "" : fmt::format(", {} reasons to skip samples "
                                                                             "(see above)", report.skipped.size()));
  }
  world.barrier();
  auto rows = std::make_unique<TokenCacheRows>(cache_path, data_config, model_config.vocab_size,
                                               config.model.model_name_or_path);
  QFT_CHECK(rows->size() > 0, "{}: the token cache {} holds no sample: nothing to train on", config.source,
            cache_path);
  return rows;
}

class SubsetRows final : public TrainingRows {
 public:
  SubsetRows(std::shared_ptr<const TrainingRows> base, std::vector<int64_t> indices)
      : base_(std::move(base)), indices_(std::move(indices)) {}
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  std::vector<TokenRow> read(const std::vector<int64_t>& indices) const override {
    std::vector<int64_t> mapped;
    mapped.reserve(indices.size());
    for (int64_t i : indices) {
      QFT_CHECK(i >= 0 && i < size(), "row {} is outside [0, {})", i, size());
      mapped.push_back(indices_[static_cast<size_t>(i)]);
    }
    return base_->read(mapped);
  }

 private:
  std::shared_ptr<const TrainingRows> base_;
  std::vector<int64_t> indices_;
};

}  // namespace

RowSplit split_rows(int64_t n, double val_size, uint64_t seed, const std::string& source) {
  RowSplit split;
  const int64_t held_out = val_size < 1.0 ? static_cast<int64_t>(std::llround(val_size * static_cast<double>(n)))
                                          : static_cast<int64_t>(val_size);
  if (val_size > 0.0) {
    QFT_CHECK(held_out >= 1 && held_out < n,
              "{}: data.val_size {} holds out {} of the {} rows; at least one row must be held out and one trained on",
              source, val_size, held_out, n);
  }
  // Fisher-Yates with SplitMix64 draws: the same split with every compiler and on every rank.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  uint64_t state = seed ^ 0x76616c5f73697a65ULL;  // "val_size": a stream apart from the data order's
  for (int64_t i = n - 1; i > 0; --i) {
    state += kSplitMix64Increment;
    const int64_t j = static_cast<int64_t>(splitmix64_mix(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  split.held_out.assign(order.begin(), order.begin() + held_out);
  split.train.assign(order.begin() + held_out, order.end());
  std::sort(split.held_out.begin(), split.held_out.end());
  std::sort(split.train.begin(), split.train.end());
  return split;
}

std::unique_ptr<TrainingRows> subset_rows(std::shared_ptr<const TrainingRows> base, std::vector<int64_t> indices) {
  return std::make_unique<SubsetRows>(std::move(base), std::move(indices));
}

std::unique_ptr<TrainingRows> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config,
                                                 parallel::Communicator& world) {
  if (config.data.pipeline) return load_token_cache_rows(config, model_config, world);
  return std::make_unique<InMemoryRows>(read_pretokenized_jsonl(config.data.pretokenized, model_config.vocab_size,
                                                                      model_config.max_position_embeddings));
}

at::Device training_device(const TrainConfig& config, int local_rank) {
  const std::string& choice = config.model.device;
  const bool cuda_available = at::hasCUDA();
  QFT_CHECK(choice != "cuda" || cuda_available,
            "{}: model.device is cuda but this qft build or machine has no CUDA device", config.source);
  if (choice == "cpu" || !cuda_available) return at::kCPU;
  const int devices = at::detail::getCUDAHooks().deviceCount();
  QFT_CHECK(local_rank < devices,
            "this rank is number {} on its node, but the node has {} CUDA devices: start one rank per GPU "
            "(mpirun -np <GPUs>, or srun --ntasks-per-node=<GPUs per node>)",
            local_rank, devices);
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(local_rank));
}

void set_current_cuda_device(at::Device device) {
  if (!device.is_cuda()) return;
#ifdef QFT_CUDA
  c10::cuda::set_device(device.index());
#else
  fail("{}: this qft build has no CUDA", device.str());
#endif
}

at::ScalarType compute_dtype(const TrainConfig& config, at::Device device) {
  const std::string& dtype = config.model.torch_dtype;
  if (dtype == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  return hf::parse_dtype(dtype, config.source + ": model.torch_dtype");
}

}  // namespace qft::train
