#include "parallel/tp_sharding.h"

#include "core/error.h"
#include "parallel/tp_mappings.h"

namespace qft::parallel {

using model::LoraPair;
using model::Projection;

void check_tensor_parallel_size(const model::Qwen3Config& c, int64_t T) {
  QFT_CHECK(T >= 1, "tensor_parallel_size must be at least 1, got {}", T);
  auto require = [&](int64_t n, const char* key) {
    QFT_CHECK(n % T == 0, "tensor_parallel_size {} must divide the model's {} ({}): each rank holds an equal share", T,
              key, n);
  };
  require(c.num_key_value_heads, "num_key_value_heads");
  require(c.num_attention_heads, "num_attention_heads");
  require(c.intermediate_size, "intermediate_size");
  require(c.vocab_size, "vocab_size");
}

model::Qwen3Config local_config(const model::Qwen3Config& config, int64_t T) {
  check_tensor_parallel_size(config, T);
  model::Qwen3Config c = config;
  c.num_attention_heads /= T;
  c.num_key_value_heads /= T;
  c.intermediate_size /= T;
  return c;
}

VocabShard vocab_shard(int64_t vocab_size, int64_t index, int64_t count) {
  QFT_CHECK(count >= 1 && vocab_size % count == 0,
            "tensor_parallel_size {} must divide vocab_size ({}): each rank holds an equal share", count, vocab_size);
  QFT_CHECK(index >= 0 && index < count, "vocabulary shard {} of {}", index, count);
  const int64_t n = vocab_size / count;
  return {index * n, (index + 1) * n, vocab_size};
}

at::Tensor shard_vocab_rows(const at::Tensor& table, int64_t index, int64_t count) {
  const VocabShard s = vocab_shard(table.size(0), index, count);
  return table.narrow(0, s.begin, s.size()).contiguous();
}

int shard_dim(Projection p) { return model::projection_info(p).style == model::ParallelStyle::column ? 0 : 1; }

LoraPair shard_lora_pair(const LoraPair& full, Projection p, int64_t index, int64_t count) {
  if (!full.defined()) return {};
  const char* name = model::projection_name(p);
  LoraPair out;
  if (shard_dim(p) == 0) {  // column: A [r, in] replicated, B [out, r] by rows
    out.A = full.A.clone();
    out.B = split_along(full.B, 0, index, count, name);
  } else {  // row: A by columns (the input features), B [out, r] replicated
    out.A = split_along(full.A, 1, index, count, name);
    out.B = full.B.clone();
  }
  return out;
}

model::Linear shard_linear(const model::Linear& full, int64_t index, int64_t count) {
  QFT_CHECK(full.weight != nullptr && full.weight->shard().count == 1, "{}: shard_linear needs the whole weight",
            full.info().name);
  const int dim = shard_dim(full.projection);
  model::Linear out;
  out.projection = full.projection;
  at::Tensor slice = split_along(full.weight->dense(), dim, index, count, full.info().name);
  out.weight = std::make_shared<model::DenseWeight>(std::move(slice), model::WeightShard{dim, index, count});
  if (full.lora) {
    model::LoraBranch branch = *full.lora;
    const LoraPair pair = shard_lora_pair({full.lora->A, full.lora->B}, full.projection, index, count);
    branch.A = pair.A;
    branch.B = pair.B;
    out.lora = branch;
  }
  return out;
}

model::LayerWeights shard_layer_weights(const model::LayerWeights& full, int64_t index, int64_t count) {
  model::LayerWeights out = full;  // the norms: shared
  for (model::Linear& linear : out.projections) linear = shard_linear(linear, index, count);
  return out;
}

model::Qwen3Weights shard_weights(const model::Qwen3Weights& full, int64_t index, int64_t count) {
  model::Qwen3Weights out;
  out.embed_tokens = shard_vocab_rows(full.embed_tokens, index, count);
  out.lm_head = full.tied() ? out.embed_tokens : shard_vocab_rows(full.lm_head, index, count);
  out.norm = full.norm;
  for (const model::LayerWeights& layer : full.layers) out.layers.push_back(shard_layer_weights(layer, index, count));
  return out;
}

model::Qwen3Weights load_weight_shard(const std::string& model_dir, const model::Qwen3Config& config,
                                      at::ScalarType dtype, at::Device device, int64_t index, int64_t count) {
  check_tensor_parallel_size(config, count);
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  auto part = [&](const std::string& name, const at::Tensor& whole) -> at::Tensor {
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") {
      const VocabShard s = vocab_shard(whole.size(0), index, count);
      return whole.narrow(0, s.begin, s.size());
    }
    for (const model::ProjectionInfo& info : model::projection_table()) {
      if (!ends_with(name, std::string(".") + info.module + ".weight")) continue;
      const int dim = shard_dim(info.projection);
      const int64_t size = whole.size(dim) / count;
      return whole.narrow(dim, index * size, size);
    }
    return whole;  // norms: replicated
  };
  model::Qwen3Weights w = model::Qwen3Weights::load(model_dir, config, dtype, device, part);
  for (model::LayerWeights& layer : w.layers)
    for (model::Linear& linear : layer.projections)
      linear.weight = std::make_shared<model::DenseWeight>(
          linear.weight->dense(), model::WeightShard{shard_dim(linear.projection), index, count});
  return w;
}

model::LoraWeights shard_lora(const model::LoraWeights& full, int64_t index, int64_t count) {
  model::LoraWeights out;
  out.config = full.config;
  out.layers.resize(full.layers.size());
  for (size_t i = 0; i < full.layers.size(); ++i)
    for (const model::ProjectionInfo& info : model::projection_table()) {
      const int p = static_cast<int>(info.projection);
      out.layers[i][p] = shard_lora_pair(full.layers[i][p], info.projection, index, count);
    }
  return out;
}

model::LoraWeights gather_lora(const model::LoraWeights& local, Communicator& tp) {
  model::LoraWeights out;
  out.config = local.config;
  out.layers.resize(local.layers.size());
  for (size_t i = 0; i < local.layers.size(); ++i)
    for (const model::ProjectionInfo& info : model::projection_table()) {
      const int p = static_cast<int>(info.projection);
      const LoraPair& pair = local.layers[i][p];
      if (!pair.defined()) continue;
      if (shard_dim(info.projection) == 0) {
        out.layers[i][p].A = pair.A;
        out.layers[i][p].B = all_gather_along(pair.B.contiguous(), 0, tp);
      } else {
        out.layers[i][p].A = all_gather_along(pair.A.contiguous(), 1, tp);
        out.layers[i][p].B = pair.B;
      }
    }
  return out;
}

std::vector<at::Tensor> partial_lora_gradients(const model::LoraWeights& grads) {
  std::vector<at::Tensor> out;
  for (const auto& layer : grads.layers)
    for (const model::ProjectionInfo& info : model::projection_table()) {
      const LoraPair& pair = layer[static_cast<int>(info.projection)];
      if (pair.defined()) out.push_back(shard_dim(info.projection) == 0 ? pair.A : pair.B);
    }
  return out;
}

std::vector<at::Tensor> partial_layer_gradients(const model::LayerWeights& grads, bool sequence_parallel) {
  if (sequence_parallel) return {grads.input_layernorm, grads.q_norm, grads.k_norm, grads.post_attention_layernorm};
  return {grads.q_norm, grads.k_norm};
}

void sum_partial_gradients(const std::vector<at::Tensor>& partial, Communicator& tp) {
  all_reduce_sum_all(partial, tp);
}

}  // namespace qft::parallel
