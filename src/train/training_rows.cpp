#include "train/training_rows.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <spdlog/spdlog.h>
#ifdef QFT_CUDA
#include <c10/cuda/CUDAFunctions.h>
#endif

#include "core/error.h"
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

}  // namespace

std::unique_ptr<TrainingRows> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config,
                                                 parallel::Communicator& world) {
  if (config.data.pipeline) return load_token_cache_rows(config, model_config, world);
  return std::make_unique<InMemoryRows>(read_pretokenized_jsonl(config.data.pretokenized, model_config.vocab_size));
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
