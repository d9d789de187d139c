#include "train/evaluate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "model/qwen3_model.h"
#include "hf/peft_adapter.h"
#include "train/training_rows.h"

namespace qft::train {

LossTotals sum_losses(const TrainingRows& rows, int64_t first, int64_t stride, int64_t batch_size,
                      const std::function<model::LossSum(const model::Batch&)>& loss_of, int64_t min_batches) {
  std::vector<int64_t> mine;
  for (int64_t r = first; r < rows.size(); r += stride) mine.push_back(r);
  LossTotals totals;
  int64_t batches = 0;
  for (size_t b = 0; b < mine.size(); b += static_cast<size_t>(batch_size), ++batches) {
    const std::vector<TokenRow> micro_rows = rows.read(
        std::vector<int64_t>(mine.begin() + b, mine.begin() + std::min(mine.size(), b + static_cast<size_t>(batch_size))));
    std::vector<const TokenRow*> micro;
    for (const TokenRow& row : micro_rows) micro.push_back(&row);
    const model::LossSum result = loss_of(collate_rows(micro));
    totals.loss_sum += result.loss_sum;
    totals.target_tokens += result.target_tokens;
    for (const TokenRow* row : micro) {
      // Padding (segment -1) is not input; rows without segment ids have none.
      totals.input_tokens +=
          row->segment_ids.empty()
              ? static_cast<int64_t>(row->input_ids.size())
              : std::count_if(row->segment_ids.begin(), row->segment_ids.end(), [](int64_t s) { return s >= 0; });
    }
  }
  for (; batches < min_batches; ++batches) loss_of(filler_batch());
  return totals;
}

EvalResult evaluate(const TrainConfig& config, const std::string& adapter_dir, parallel::Communicator& world,
                    int local_rank) {
  const at::Device device = training_device(config, local_rank);
  set_current_cuda_device(device);
  const at::ScalarType dtype = compute_dtype(config, device);
  const std::string& model_dir = config.model.model_name_or_path;
  const auto model_config =
      model::Qwen3Config::from_file((std::filesystem::path(model_dir) / "config.json").string());
  const std::unique_ptr<TrainingRows> rows = load_training_rows(config, model_config, world);
  model::Qwen3Model model(model_config, model::Qwen3Weights::load(model_dir, model_config, dtype, device,
                                                                   config.load_in_4bit()));

  const std::string adapter = adapter_dir.empty() ? config.lora.adapter_name_or_path : adapter_dir;
  std::optional<model::LoraWeights> lora;
  if (!adapter.empty()) lora = hf::load_peft_adapter(adapter, model_config, device);

  // This rank's rows only: r, r + world, r + 2 world, ...
  const LossTotals mine = sum_losses(*rows, world.rank(), world.size(), config.training.per_device_train_batch_size,
                                     [&](const model::Batch& batch) {
                                       return model.forward_loss(batch, lora ? &*lora : nullptr,
                                                                 config.training.loss_chunk_tokens);
                                     });
  EvalResult out;
  out.rows = rows->size();
  out.target_tokens = world.all_reduce_sum(mine.target_tokens);
  out.input_tokens = world.all_reduce_sum(mine.input_tokens);
  QFT_CHECK(out.target_tokens > 0, "{}: the evaluation data has no target token", config.source);
  out.loss = world.all_reduce_sum(mine.loss_sum) / static_cast<double>(out.target_tokens);
  QFT_CHECK(std::isfinite(out.loss), "{}: the evaluation loss is {}", config.source, out.loss);
  out.perplexity = std::exp(out.loss);
  return out;
}

}  // namespace qft::train
