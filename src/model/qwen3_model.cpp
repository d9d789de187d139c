#include "model/qwen3_model.h"

#include <limits>
#include <vector>

#include <c10/core/GradMode.h>

#include "core/error.h"
#include "model/decoder_layer.h"
#include "model/ops/attention.h"
#include "model/ops/common.h"
#include "model/ops/cross_entropy.h"
#include "model/ops/embedding.h"
#include "model/ops/rms_norm.h"
#include "model/ops/rope.h"
#include "model/ops/tiled_mlp.h"

namespace qft::model {

PreparedBatch prepare_batch(const Batch& batch, const Qwen3Config& c, const Qwen3Weights& w, bool flash) {
  QFT_CHECK(batch.input_ids.defined() && batch.input_ids.dim() == 2, "batch: input_ids must be [B, T]");
  PreparedBatch p;
  p.B = batch.input_ids.size(0);
  p.T = batch.input_ids.size(1);
  QFT_CHECK(p.B > 0 && p.T > 0, "batch: input_ids is empty ([{}, {}])", p.B, p.T);
  const at::Device device = w.embed_tokens.device();
  auto check_shape = [&](const at::Tensor& t, const char* name) {
    QFT_CHECK(t.sizes() == batch.input_ids.sizes(), "batch: {} has shape {} but input_ids has {}", name,
              fmt::format("{}", fmt::join(t.sizes(), ", ")), fmt::format("{}", fmt::join(batch.input_ids.sizes(), ", ")));
  };
  // Labels of another shape would be shifted and matched against the wrong rows.
  if (batch.labels.defined()) check_shape(batch.labels, "labels");
  const at::Tensor ids = batch.input_ids.to(at::kCPU, at::kLong).reshape({-1});
  const auto [min_id, max_id] = at::aminmax(ids);
  const int64_t lo = min_id.item<int64_t>(), hi = max_id.item<int64_t>();
  QFT_CHECK(lo >= 0 && hi < c.vocab_size, "batch: input_ids must be in [0, {}), got values in [{}, {}]", c.vocab_size,
            lo, hi);
  p.ids = ops::host_to_device(ids, device);
  at::Tensor positions;
  if (batch.position_ids.defined()) {
    check_shape(batch.position_ids, "position_ids");
    positions = ops::host_to_device(batch.position_ids.to(at::kLong).contiguous(), device);
  } else {
    positions = at::arange(p.T, at::TensorOptions().dtype(at::kLong).device(device)).expand({p.B, p.T});
  }
  at::Tensor segments;
  if (batch.segment_ids.defined()) {
    check_shape(batch.segment_ids, "segment_ids");
    segments = batch.segment_ids.to(at::kCPU, at::kLong);
  }
  std::tie(p.cos, p.sin) = ops::rope_tables(positions.reshape({-1}), c.head_dim, c.rope_theta,
                                            w.embed_tokens.scalar_type(), c.rope_scaling);
  p.attention = ops::attention_layout(segments, p.B, p.T, c.head_dim, device, w.embed_tokens.scalar_type(), flash);
  if (batch.labels.defined()) p.loss = ops::loss_targets(batch.labels, segments, c.vocab_size, device);
  return p;
}

const LoraCompute* lora_for_compute(const LoraWeights* lora, const LoraCompute* given, at::ScalarType dtype,
                                    std::optional<LoraCompute>& own) {
  if (lora == nullptr) return nullptr;
  if (given == nullptr) return &own.emplace(LoraCompute::make(*lora, dtype));
  QFT_CHECK(given->dtype == dtype, "the adapters were cast to {} for a step whose activations are {}",
            c10::toString(given->dtype), c10::toString(dtype));
  QFT_CHECK(given->layers.size() == lora->layers.size() && given->config.r == lora->config.r &&
                given->config.target_modules == lora->config.target_modules,
            "the adapters cast for compute ({} layers, r {}) are not those of the step ({} layers, r {})",
            given->layers.size(), given->config.r, lora->layers.size(), lora->config.r);
  return given;
}

LayerContext layer_context(const PreparedBatch& p, const Qwen3Config& c, const Qwen3Weights& w,
                           const LoraCompute* lora, int64_t i, bool dropout, uint64_t dropout_seed,
                           int64_t mlp_shards) {
  LayerContext ctx;
  ctx.config = &c;
  ctx.weights = &w.layers[i];
  ctx.projections = lora == nullptr
                        ? w.layers[i].projections
                        : layer_projections(w.layers[i], &lora->layers[i], lora->config.scaling(),
                                            dropout ? lora->config.lora_dropout : 0.0, dropout_seed, i);
  if (lora != nullptr) ctx.lora_stacked_A = lora->stacked_A[i];
  ctx.layer = i;
  ctx.mlp_shards = mlp_shards;
  ctx.B = p.B;
  ctx.T = p.T;
  ctx.cos = p.cos;
  ctx.sin = p.sin;
  ctx.attention = p.attention;
  return ctx;
}

LayerRecompute layer_recompute(const StepOptions& options, int64_t layer) {
  if (options.gradient_checkpointing)
    return options.recompute_num_layers < 0 || layer < options.recompute_num_layers ? LayerRecompute::full
                                                                                    : LayerRecompute::cheap;
  return options.selective_recompute ? LayerRecompute::cheap : LayerRecompute::none;
}

at::Tensor checkpointed_layer_forward(const LayerContext& ctx, const at::Tensor& x, LayerActivations& acts,
                                      const StepOptions& options, ActivationOffload* offload) {
  using Part = ActivationOffload::Part;
  acts.x = offload != nullptr ? offload->save(ctx.layer, x) : x;
  at::Tensor mid;
  at::Tensor y = decoder_layer_forward(ctx, x, nullptr, options.checkpoint_residuals ? &mid : nullptr);
  if (options.checkpoint_residuals)
    acts.x_mid = offload != nullptr ? offload->save(ctx.layer, mid, Part::mid_residual) : mid;
  return y;
}

void checkpointed_layer_recompute(const LayerContext& ctx, LayerActivations& acts, const StepOptions& options,
                                  ActivationOffload* offload) {
  using Part = ActivationOffload::Part;
  // Held by acts alone, which backward releases. Same dropout masks: they derive from the seed.
  at::Tensor x = std::move(acts.x), mid = std::move(acts.x_mid);
  if (offload != nullptr) x = offload->restore(ctx.layer, x);
  if (options.checkpoint_residuals && offload != nullptr)
    mid = offload->restore(ctx.layer, mid, Part::mid_residual);
  decoder_layer_recompute(ctx, x, acts, mid);
}

int64_t tiled_mlp_shards(const StepOptions& options, int64_t rows, int64_t hidden_size) {
  if (!options.tiled_mlp) return 1;
  return options.tiled_mlp_num_shards > 0 ? options.tiled_mlp_num_shards
                                          : ops::tiled_mlp_auto_shards(rows, hidden_size);
}

namespace {

void check_structure(const Qwen3Config& c, const Qwen3Weights& w, const LoraWeights* lora) {
  QFT_CHECK(static_cast<int64_t>(w.layers.size()) == c.num_hidden_layers, "model has {} layers, config says {}",
            w.layers.size(), c.num_hidden_layers);
  if (lora != nullptr)
    QFT_CHECK(lora->layers.size() == w.layers.size(), "LoRA adapters have {} layers, the model {}",
              lora->layers.size(), w.layers.size());
}

// Final hidden states (before the final norm) of a forward pass that saves nothing.
at::Tensor forward_hidden(const PreparedBatch& p, const Qwen3Config& c, const Qwen3Weights& w,
                          const LoraWeights* masters, const LayerHooks& hooks = {}) {
  std::optional<LoraCompute> own;
  const LoraCompute* lora = lora_for_compute(masters, nullptr, w.embed_tokens.scalar_type(), own);
  at::Tensor x = ops::embedding_forward(w.embed_tokens, p.ids);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    if (hooks.before_layer) hooks.before_layer(i, LayerPass::forward);
    x = decoder_layer_forward(layer_context(p, c, w, lora, i, /*dropout=*/false, 0), x, nullptr);
  }
  return x;
}

}  // namespace

Batch Batch::causal(at::Tensor input_ids, at::Tensor labels) {
  Batch b;
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  b.position_ids = at::arange(T, input_ids.options().dtype(at::kLong)).expand({B, T}).contiguous();
  b.input_ids = std::move(input_ids);
  b.labels = std::move(labels);
  return b;
}

Qwen3Model::Qwen3Model(Qwen3Config config, Qwen3Weights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  check_structure(config_, weights_, nullptr);
}

LossSum Qwen3Model::forward_backward(const Batch& batch, const LoraWeights* lora, Gradients& grads,
                                        const StepOptions& options) {
  c10::NoGradGuard no_grad;  // the explicit backward below is the only one
  const Qwen3Config& c = config_;
  const Qwen3Weights& w = weights_;
  check_structure(c, w, lora);
  QFT_CHECK(batch.labels.defined(), "forward_backward: batch has no labels");
  QFT_CHECK(!grads.lora || lora != nullptr, "forward_backward: LoRA gradients requested without adapters");
  if (grads.lora)
    QFT_CHECK(grads.lora->layers.size() == lora->layers.size(), "LoRA gradient buffers have {} layers, adapters {}",
              grads.lora->layers.size(), lora->layers.size());
  Qwen3Weights* gw = grads.weights ? &*grads.weights : nullptr;
  if (gw != nullptr)
    QFT_CHECK(gw->layers.size() == w.layers.size(), "weight gradient buffers have {} layers, the model {}",
              gw->layers.size(), w.layers.size());
  const bool dropout = options.train_lora_dropout && lora != nullptr && lora->config.lora_dropout > 0.0;

  const PreparedBatch p = prepare_batch(batch, c, w, options.flash_attention);
  const int64_t L = c.num_hidden_layers;
  std::optional<LoraCompute> own;
  const LoraCompute* compute = lora_for_compute(lora, options.lora_compute, w.embed_tokens.scalar_type(), own);
  const int64_t mlp_shards = tiled_mlp_shards(options, p.B * p.T, c.hidden_size);
  auto ctx_of = [&](int64_t i) {
    return layer_context(p, c, w, compute, i, dropout, options.dropout_seed, mlp_shards);
  };
  ActivationOffload* offload = options.gradient_checkpointing ? options.activation_offload : nullptr;

  // Forward: every layer's activations, or only its input under gradient checkpointing.
  std::vector<LayerActivations> acts(L);
  at::Tensor x = ops::embedding_forward(w.embed_tokens, p.ids);
  const LayerHooks& hooks = options.hooks;
  for (int64_t i = 0; i < L; ++i) {
    if (hooks.before_layer) hooks.before_layer(i, LayerPass::forward);
    const LayerRecompute recompute = layer_recompute(options, i);
    if (recompute == LayerRecompute::full) {
      x = checkpointed_layer_forward(ctx_of(i), x, acts[i], options, offload);
    } else {
      x = decoder_layer_forward(ctx_of(i), x, &acts[i]);
      if (recompute == LayerRecompute::cheap) drop_recomputable(acts[i]);
    }
  }
  at::Tensor rstd;
  at::Tensor hn = ops::rms_norm_forward(x, w.norm, c.rms_norm_eps, &rstd);

  // Loss and its gradient, chunk by chunk; a tied lm_head sends its gradient to the embedding.
  at::Tensor* dlm = gw == nullptr ? nullptr : (w.tied() ? &gw->embed_tokens : &gw->lm_head);
  at::Tensor dh;
  const ops::CrossEntropyResult ce =
      ops::lm_head_cross_entropy(hn, w.lm_head, p.loss, options.loss_chunk_tokens, options.loss_denominator, &dh, dlm);
  hn.reset();  // [tokens, hidden] each, like dh and x below: gigabytes at long context

  // Backward through the final norm and the layers, last to first.
  at::Tensor dx = ops::rms_norm_backward(dh, x, w.norm, rstd, gw ? &gw->norm : nullptr);
  dh.reset();
  x.reset();
  for (int64_t i = L - 1; i >= 0; --i) {
    if (hooks.before_layer) hooks.before_layer(i, LayerPass::backward);
    const LayerContext ctx = ctx_of(i);
    const LayerRecompute recompute = layer_recompute(options, i);
    if (recompute == LayerRecompute::full) {
      checkpointed_layer_recompute(ctx, acts[i], options, offload);
    } else if (recompute == LayerRecompute::cheap) {
      recompute_cheap(ctx, acts[i]);
    }
    LayerGrads lg;
    lg.weights = gw ? &gw->layers[i] : nullptr;
    lg.lora = grads.lora ? &grads.lora->layers[i] : nullptr;
    const bool need_dx = i > 0 || gw != nullptr;
    dx = decoder_layer_backward(ctx, std::move(dx), acts[i], lg, need_dx);
    if (hooks.after_backward) hooks.after_backward(i);
  }
  if (gw != nullptr) ops::embedding_backward(dx, p.ids, gw->embed_tokens);

  LossSum r;
  r.loss = ce.loss_sum;
  // The step's only wait for the GPU, once all of it is queued (or the caller's, later).
  r.loss_sum = options.read_loss ? ce.loss_sum.item<double>() : std::numeric_limits<double>::quiet_NaN();
  r.target_tokens = ce.target_tokens;
  return r;
}

LossSum Qwen3Model::forward_loss(const Batch& batch, const LoraWeights* lora, int64_t loss_chunk_tokens,
                                 const LayerHooks& hooks) {
  c10::NoGradGuard no_grad;
  check_structure(config_, weights_, lora);
  QFT_CHECK(batch.labels.defined(), "forward_loss: batch has no labels");
  const PreparedBatch p = prepare_batch(batch, config_, weights_);
  const at::Tensor x = forward_hidden(p, config_, weights_, lora, hooks);
  const at::Tensor hn = ops::rms_norm_forward(x, weights_.norm, config_.rms_norm_eps, nullptr);
  const ops::CrossEntropyResult ce =
      ops::lm_head_cross_entropy(hn, weights_.lm_head, p.loss, loss_chunk_tokens, 1.0, nullptr, nullptr);
  LossSum r;
  r.loss_sum = ce.loss_sum.item<double>();
  r.target_tokens = ce.target_tokens;
  return r;
}

at::Tensor Qwen3Model::logits(const Batch& batch, const LoraWeights* lora) {
  c10::NoGradGuard no_grad;
  check_structure(config_, weights_, lora);
  const PreparedBatch p = prepare_batch(batch, config_, weights_);
  const at::Tensor x = forward_hidden(p, config_, weights_, lora);
  const at::Tensor hn = ops::rms_norm_forward(x, weights_.norm, config_.rms_norm_eps, nullptr);
  return at::mm(hn, weights_.lm_head.t()).to(at::kFloat).view({p.B, p.T, config_.vocab_size});
}

}  // namespace qft::model
