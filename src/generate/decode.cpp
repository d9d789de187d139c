#include "generate/decode.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <c10/core/GradMode.h>

#include "core/error.h"
#include "model/decoder_layer.h"
#include "model/ops/common.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/rms_norm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"

namespace qft::generate {

using model::Projection;

at::Tensor visible_keys(const std::vector<int64_t>& starts, int64_t T, at::Device device) {
  QFT_CHECK(!starts.empty() && T > 0, "visible_keys: no rows or no new tokens");
  const int64_t L = *std::max_element(starts.begin(), starts.end()) + T;
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  const at::Tensor start = at::tensor(starts, i64).to(device);
  const at::Tensor last = start.unsqueeze(1) + at::arange(T, i64.device(device)).unsqueeze(0);  // [B, T]
  return at::arange(L, i64.device(device)).view({1, 1, L}) <= last.unsqueeze(2);
}

KvCache KvCache::allocate(const model::Qwen3Config& c, int64_t batch, int64_t capacity, at::ScalarType dtype,
                          at::Device device) {
  QFT_CHECK(batch > 0 && capacity > 0, "KV cache: batch {} and capacity {} must be positive", batch, capacity);
  KvCache cache;
  cache.capacity = capacity;
  cache.lengths.assign(batch, 0);
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  // Zeros, not empty: attention reads a row's keys up to the longest row's length, masked but still
  // multiplied (probability 0 times a value); uninitialised memory may hold NaN, and 0 * NaN is NaN.
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    cache.k.push_back(at::zeros({batch, c.num_key_value_heads, capacity, c.head_dim}, opts));
    cache.v.push_back(at::zeros({batch, c.num_key_value_heads, capacity, c.head_dim}, opts));
  }
  return cache;
}

int64_t KvCache::bytes() const {
  int64_t n = 0;
  for (size_t i = 0; i < k.size(); ++i) n += static_cast<int64_t>(k[i].nbytes() + v[i].nbytes());
  return n;
}

at::Tensor cached_attention(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& allowed, bool use_sdpa) {
  const int64_t B = q.size(0), T = q.size(1), nH = q.size(2), D = q.size(3), nKV = k_cache.size(1);
  const int64_t L = allowed.size(2);
  QFT_CHECK(allowed.size(0) == B && allowed.size(1) == T, "cached_attention: the mask is not [B, T, L]");
  QFT_CHECK(nH % nKV == 0, "cached_attention: {} query heads are not a multiple of {} kv heads", nH, nKV);
  QFT_CHECK(L <= k_cache.size(2), "cached_attention: {} keys needed, the cache holds {}", L, k_cache.size(2));
  const at::Tensor k = k_cache.narrow(2, 0, L);  // [B, nKV, L, D], a view
  const at::Tensor v = v_cache.narrow(2, 0, L);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (use_sdpa) {
    const at::Tensor o = at::scaled_dot_product_attention(q.permute({0, 2, 1, 3}), k, v, allowed.unsqueeze(1),
                                                          0.0, false, scale, /*enable_gqa=*/true);
    return o.permute({0, 2, 1, 3}).contiguous();  // [B, T, nH, D]
  }
  // Queries grouped by kv head as in the training path: [B, nKV, R*T, D], one GEMM per kv head.
  const int64_t R = nH / nKV;
  const at::Tensor qg = q.permute({0, 2, 1, 3}).reshape({B, nKV, R * T, D});
  at::Tensor s = model::ops::to_acc(at::matmul(qg, k.transpose(-1, -2))).mul_(scale).view({B, nKV, R, T, L});
  s.masked_fill_(allowed.view({B, 1, 1, T, L}).logical_not(), -std::numeric_limits<double>::infinity());
  // Every query sees at least key 0, so no row of the softmax is empty.
  const at::Tensor p = at::softmax(s, -1).to(q.scalar_type()).view({B, nKV, R * T, L});
  return at::matmul(p, v).view({B, nH, T, D}).permute({0, 2, 1, 3}).contiguous();
}

Decoder::Decoder(const model::Qwen3Config& config, const model::Qwen3Weights& weights,
                 const model::LoraWeights* lora)
    : config_(config), weights_(weights) {
  QFT_CHECK(static_cast<int64_t>(weights.layers.size()) == config.num_hidden_layers,
            "decoder: the model has {} layers, config.json says {}", weights.layers.size(), config.num_hidden_layers);
  if (lora != nullptr)
    QFT_CHECK(lora->layers.size() == weights.layers.size(), "decoder: the adapter has {} layers, the model {}",
              lora->layers.size(), weights.layers.size());
  const at::ScalarType dt = dtype();
  for (size_t i = 0; i < weights.layers.size(); ++i) {
    if (lora == nullptr) {
      projections_.push_back(weights.layers[i].projections);
      continue;
    }
    std::array<model::LoraPair, model::kNumProjections> pairs = lora->layers[i];
    for (model::LoraPair& pair : pairs)
      if (pair.defined()) pair = {pair.A.to(device(), dt), pair.B.to(device(), dt)};
    projections_.push_back(model::layer_projections(weights.layers[i], &pairs, lora->config.scaling(),
                                                    /*dropout=*/0.0, 0, static_cast<int64_t>(i)));
  }
}

KvCache Decoder::allocate_cache(int64_t batch, int64_t capacity) const {
  return KvCache::allocate(config_, batch, capacity, dtype(), device());
}

at::Tensor Decoder::forward(KvCache& cache, const at::Tensor& ids, const std::vector<int64_t>& new_lengths,
                            bool all_positions) {
  c10::NoGradGuard no_grad;
  const model::Qwen3Config& c = config_;
  QFT_CHECK(ids.dim() == 2, "decoder: ids must be [B, T]");
  const int64_t B = ids.size(0), T = ids.size(1), N = B * T;
  const int64_t nH = c.num_attention_heads, nKV = c.num_key_value_heads, D = c.head_dim;
  QFT_CHECK(B == cache.batch() && static_cast<int64_t>(new_lengths.size()) == B,
            "decoder: {} rows of ids, {} new lengths, a cache of {} rows", B, new_lengths.size(), cache.batch());
  for (int64_t b = 0; b < B; ++b) {
    QFT_CHECK(new_lengths[b] >= 1 && new_lengths[b] <= T, "decoder: row {} has {} new tokens in a block of {}", b,
              new_lengths[b], T);
    QFT_CHECK(cache.lengths[b] + T <= cache.capacity, "decoder: row {} needs {} positions, the cache holds {}", b,
              cache.lengths[b] + T, cache.capacity);
  }
  const at::Device dev = device();
  const auto i64 = at::TensorOptions().dtype(at::kLong).device(dev);
  const at::Tensor flat_ids = ids.to(dev, at::kLong).reshape({-1});
  // Positions continue each row's cache: the row's tokens are numbered from 0 whatever the other rows
  // hold (transformers numbers left-padded rows the same way, from the attention mask).
  const at::Tensor starts = at::tensor(cache.lengths, at::TensorOptions().dtype(at::kLong)).to(dev);
  const at::Tensor positions = starts.unsqueeze(1) + at::arange(T, i64).unsqueeze(0);  // [B, T]
  const at::Tensor rows = at::arange(B, i64).unsqueeze(1).expand({B, T});
  const auto [cos, sin] = model::ops::rope_tables(positions.reshape({-1}), D, c.rope_theta, dtype(), c.rope_scaling);
  const double eps = c.rms_norm_eps;
  const at::Tensor visible = visible_keys(cache.lengths, T, dev);  // shared by every layer

  at::Tensor x = model::ops::embedding_forward(weights_.embed_tokens, flat_ids);  // [N, H]
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const model::LayerWeights& w = weights_.layers[l];
    const auto& proj = projections_[l];
    auto project = [&](Projection p, const at::Tensor& in) {
      return model::ops::linear_forward(proj[static_cast<int>(p)], in, nullptr);
    };
    const at::Tensor h = model::ops::rms_norm_forward(x, w.input_layernorm, eps, nullptr);
    const at::Tensor q_pre = project(Projection::q, h).view({N, nH, D});
    const at::Tensor k_pre = project(Projection::k, h).view({N, nKV, D});
    const at::Tensor v = project(Projection::v, h).view({B, T, nKV, D});
    const at::Tensor q = model::ops::rope_forward(model::ops::rms_norm_forward(q_pre, w.q_norm, eps, nullptr), cos, sin);
    const at::Tensor k = model::ops::rope_forward(model::ops::rms_norm_forward(k_pre, w.k_norm, eps, nullptr), cos, sin);
    c10::List<std::optional<at::Tensor>> at_positions;  // cache[b, :, positions[b, t]] for every new token
    at_positions.push_back(rows);
    at_positions.push_back(std::optional<at::Tensor>());
    at_positions.push_back(positions);
    cache.k[l].index_put_(at_positions, k.view({B, T, nKV, D}));
    cache.v[l].index_put_(at_positions, v);
    const at::Tensor attn = cached_attention(q.view({B, T, nH, D}), cache.k[l], cache.v[l], visible);
    x = x + project(Projection::o, attn.view({N, nH * D}));
    const at::Tensor h2 = model::ops::rms_norm_forward(x, w.post_attention_layernorm, eps, nullptr);
    x = x + project(Projection::down, model::ops::swiglu_forward(project(Projection::gate, h2), project(Projection::up, h2)));
  }
  for (int64_t b = 0; b < B; ++b) cache.lengths[b] += new_lengths[b];

  at::Tensor last;
  if (all_positions) {
    last = x;
  } else {
    std::vector<int64_t> index(B);
    for (int64_t b = 0; b < B; ++b) index[b] = b * T + new_lengths[b] - 1;
    last = x.index_select(0, at::tensor(index, at::TensorOptions().dtype(at::kLong)).to(dev));  // [B, H]
  }
  const at::Tensor hn = model::ops::rms_norm_forward(last, weights_.norm, eps, nullptr);
  const at::Tensor logits = at::mm(hn, weights_.lm_head.t()).to(at::kFloat);
  return all_positions ? logits.view({B, T, c.vocab_size}) : logits;
}

}  // namespace qft::generate
