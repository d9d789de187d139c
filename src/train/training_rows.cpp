#include "train/training_rows.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "data/packed_dataset.h"
#include "data/prepare.h"
#include "dist/world.h"
#include "train/dtype_names.h"

namespace qft::train {
namespace {

std::vector<TokenRow> load_token_cache_rows(const TrainConfig& config, const model::Qwen3Config& model_config) {
  const data::DataConfig& data_config = *config.data.pipeline;
  const std::string& model_dir = config.model.model_name_or_path;
  const std::string& cache_path = config.data.token_cache;
  const dist::World& world = dist::World::instance();
  // One writer: rank 0 prepares (or finds up to date) the cache, then every rank reads it.
  if (world.is_main()) {
    const data::PrepareReport report = data::prepare_dataset(data_config, config.data.tokenizer);
    QFT_CHECK(report.cache_path == cache_path, "{}: the data or tokenizer changed while loading ({} became {})",
              config.source, cache_path, report.cache_path);
    spdlog::info("token cache {}{}: {} samples, {} tokens, {} target tokens, {} truncated{}", report.cache_path,
                 report.reused ? " (reused)" : "", report.samples, report.tokens, report.target_tokens,
                 report.truncated, report.skipped.empty() ? "" : fmt::format(", {} reasons to skip samples "
                                                                             "(see above)", report.skipped.size()));
  }
  world.barrier();
  const data::PackedDataset dataset(cache_path, data_config.max_seq_length, data_config.packing);
  QFT_CHECK(dataset.num_rows() > 0, "{}: the token cache {} holds no sample: nothing to train on", config.source,
            cache_path);
  std::vector<TokenRow> rows;
  rows.reserve(static_cast<size_t>(dataset.num_rows()));
  for (data::RowData& r : dataset.read_rows(0, dataset.num_rows())) {
    TokenRow row;
    row.target_tokens = r.target_tokens();
    row.input_ids = std::move(r.input_ids);
    row.labels = std::move(r.labels);
    row.position_ids = std::move(r.position_ids);
    row.segment_ids = std::move(r.segment_ids);
    for (int64_t id : row.input_ids) {
      QFT_CHECK(id >= 0 && id < model_config.vocab_size,
                "{}: token id {} from the tokenizer is outside the model's vocabulary ({} ids in {}/config.json)",
                cache_path, id, model_config.vocab_size, model_dir);
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

std::vector<TokenRow> load_training_rows(const TrainConfig& config, const model::Qwen3Config& model_config) {
  if (config.data.pipeline) return load_token_cache_rows(config, model_config);
  return read_pretokenized_jsonl(config.data.pretokenized, model_config.vocab_size, model_config.max_position_embeddings);
}

at::Device training_device(const TrainConfig& config) {
  const std::string& choice = config.model.device;
  const bool cuda_available = at::hasCUDA();
  QFT_CHECK(choice != "cuda" || cuda_available,
            "{}: model.device is cuda but this qft build or machine has no CUDA device", config.source);
  if (choice == "cpu" || !cuda_available) return at::kCPU;
  const int devices = at::detail::getCUDAHooks().deviceCount();
  const dist::World& world = dist::World::instance();
  QFT_CHECK(world.local_rank() < devices, "rank {} is local rank {} on its node, but the node has {} CUDA devices",
            world.rank(), world.local_rank(), devices);
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(world.local_rank()));
}

at::ScalarType compute_dtype(const TrainConfig& config, at::Device device) {
  const std::string& dtype = config.model.torch_dtype;
  if (dtype == "auto") return device.is_cuda() ? at::kBFloat16 : at::kFloat;
  return parse_dtype(dtype, config.source + ": model.torch_dtype");
}

}  // namespace qft::train
