#include "parallel/tp_model.h"

#include <limits>

#include <c10/core/GradMode.h>

#include "core/error.h"
#include "model/ops/rms_norm.h"
#include "parallel/tensor_parallel.h"
#include "parallel/tp_mappings.h"
#include "parallel/tp_sharding.h"
#include "parallel/vocab_parallel.h"

namespace qft::parallel {
namespace {

using namespace model;

void check_shards(const Qwen3Config& config, const Qwen3Weights& w, const LoraWeights* lora, const VocabShard& vocab) {
  QFT_CHECK(static_cast<int64_t>(w.layers.size()) == config.num_hidden_layers, "model has {} layers, config says {}",
            w.layers.size(), config.num_hidden_layers);
  if (lora != nullptr)
    QFT_CHECK(lora->layers.size() == w.layers.size(), "LoRA adapters have {} layers, the model {}",
              lora->layers.size(), w.layers.size());
  QFT_CHECK(w.embed_tokens.size(0) == vocab.size() && w.lm_head.size(0) == vocab.size(),
            "tensor-parallel step: embed_tokens/lm_head hold {}/{} rows, the vocabulary shard [{}, {}) has {}",
            w.embed_tokens.size(0), w.lm_head.size(0), vocab.begin, vocab.end, vocab.size());
}

// grads == nullptr: forward and loss only.
LossSum run(const Qwen3Config& config, const Qwen3Weights& w, const Batch& batch, const LoraWeights* lora,
            Gradients* grads, const StepOptions& options, Communicator& tp, bool sp) {
  c10::NoGradGuard no_grad;
  const Qwen3Config local = local_config(config, tp.size());
  const VocabShard vocab = vocab_shard(config.vocab_size, tp.rank(), tp.size());
  check_shards(config, w, lora, vocab);
  QFT_CHECK(batch.labels.defined(), "tensor-parallel step: batch has no labels");
  Qwen3Weights* gw = grads != nullptr && grads->weights ? &*grads->weights : nullptr;
  LoraWeights* gl = grads != nullptr && grads->lora ? &*grads->lora : nullptr;
  QFT_CHECK(gl == nullptr || lora != nullptr, "tensor-parallel step: LoRA gradients requested without adapters");
  const bool dropout =
      grads != nullptr && options.train_lora_dropout && lora != nullptr && lora->config.lora_dropout > 0.0;

  const PreparedBatch p = prepare_batch(batch, local, w, options.flash_attention);
  QFT_CHECK(!sp || (p.B * p.T) % tp.size() == 0,
            "sequence parallelism: the micro-batch's {} tokens ({} x {}) do not split evenly over "
            "tensor_parallel_size {}",
            p.B * p.T, p.B, p.T, tp.size());
  const int64_t L = config.num_hidden_layers;
  std::optional<LoraCompute> own;
  const LoraCompute* compute = lora_for_compute(lora, options.lora_compute, w.embed_tokens.scalar_type(), own);
  // The MLP reads all rows (gathered under sequence parallelism): chunk them as one rank would.
  const int64_t mlp_shards = tiled_mlp_shards(options, p.B * p.T, config.hidden_size);
  auto ctx_of = [&](int64_t i) {
    return tensor_parallel_context(layer_context(p, local, w, compute, i, dropout, options.dropout_seed, mlp_shards),
                                   tp, sp);
  };
  ActivationOffload* offload = grads != nullptr && options.gradient_checkpointing ? options.activation_offload : nullptr;
  std::vector<LayerActivations> acts(L);
  // Under sequence parallelism the residual stream (x, the final norm) holds this rank's rows only.
  at::Tensor x = vocab_parallel_embedding_forward(w.embed_tokens, vocab, p.ids, tp, sp);
  const LayerHooks& hooks = options.hooks;
  for (int64_t i = 0; i < L; ++i) {
    if (hooks.before_layer) hooks.before_layer(i, LayerPass::forward);
    const LayerRecompute recompute = layer_recompute(options, i);
    if (grads == nullptr) {
      x = decoder_layer_forward(ctx_of(i), x, nullptr);
    } else if (recompute == LayerRecompute::full) {
      x = checkpointed_layer_forward(ctx_of(i), x, acts[i], options, offload);
    } else {
      x = decoder_layer_forward(ctx_of(i), x, &acts[i]);
      if (recompute == LayerRecompute::cheap) drop_recomputable(acts[i]);
    }
  }
  at::Tensor rstd;
  at::Tensor hn = ops::rms_norm_forward(x, w.norm, config.rms_norm_eps, &rstd);

  at::Tensor* dlm = gw == nullptr ? nullptr : (w.tied() ? &gw->embed_tokens : &gw->lm_head);
  at::Tensor dh;
  const ops::CrossEntropyResult ce =
      vocab_parallel_cross_entropy(sp ? gather_from_sp_forward(hn, tp) : hn, w.lm_head, vocab, p.loss,
                                   options.loss_chunk_tokens, options.loss_denominator,
                                   grads != nullptr ? &dh : nullptr, dlm, tp);
  hn.reset();
  LossSum r;
  r.target_tokens = ce.target_tokens;
  if (grads == nullptr) {
    r.loss_sum = ce.loss_sum.item<double>();
    return r;
  }
  // dh is already summed over the group (copy_to_tp inside the loss), so gather_from_sp's backward is
  // the split of a duplicated gradient: keep the own rows.
  if (sp) dh = split_along(dh, 0, tp.rank(), tp.size(), "sequence-parallel lm_head input gradient");

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
    lg.lora = gl ? &gl->layers[i] : nullptr;
    dx = decoder_layer_backward(ctx, std::move(dx), acts[i], lg, i > 0 || gw != nullptr);
    if (hooks.after_backward) hooks.after_backward(i);
  }
  if (gw != nullptr) vocab_parallel_embedding_backward(dx, vocab, p.ids, gw->embed_tokens, tp, sp);
  r.loss = ce.loss_sum;
  // Read once the whole step is queued (or by the caller, later).
  r.loss_sum = options.read_loss ? ce.loss_sum.item<double>() : std::numeric_limits<double>::quiet_NaN();
  return r;
}

}  // namespace

LossSum tensor_parallel_forward_backward(const Qwen3Config& config, const Qwen3Weights& weights, const Batch& batch,
                                         const LoraWeights* lora, Gradients& grads, const StepOptions& options,
                                         Communicator& tp, bool sequence_parallel) {
  return run(config, weights, batch, lora, &grads, options, tp, sequence_parallel);
}

LossSum tensor_parallel_forward_loss(const Qwen3Config& config, const Qwen3Weights& weights, const Batch& batch,
                                     const LoraWeights* lora, int64_t loss_chunk_tokens, Communicator& tp) {
  StepOptions options;
  options.loss_chunk_tokens = loss_chunk_tokens;
  options.train_lora_dropout = false;
  return run(config, weights, batch, lora, nullptr, options, tp, false);
}

std::vector<at::Tensor> partial_gradients(const Gradients& grads, bool sequence_parallel) {
  std::vector<at::Tensor> out;
  if (grads.lora) out = partial_lora_gradients(*grads.lora);
  if (grads.weights) {
    for (const LayerWeights& layer : grads.weights->layers)
      for (const at::Tensor& t : partial_layer_gradients(layer, sequence_parallel)) out.push_back(t);
    if (sequence_parallel) out.push_back(grads.weights->norm);
  }
  return out;
}

std::vector<at::Tensor> replicated_gradients(const Gradients& grads) {
  std::vector<at::Tensor> out;
  if (grads.lora) out = partial_lora_gradients(*grads.lora);
  if (grads.weights) {
    for (const LayerWeights& layer : grads.weights->layers)
      for (const at::Tensor& t : partial_layer_gradients(layer, /*sequence_parallel=*/true)) out.push_back(t);
    out.push_back(grads.weights->norm);
  }
  return out;
}

double tensor_parallel_grad_norm_squared(const Gradients& grads, Communicator& tp) {
  auto squares = [](const at::Tensor& t) { return t.to(at::kDouble).square().sum().item<double>(); };
  double replicated = 0.0;
  for (const at::Tensor& t : replicated_gradients(grads)) replicated += squares(t);
  // Sharded: the LoRA factors that are not replicated, and (full fine-tuning) the projections,
  // embed_tokens and an untied lm_head.
  double sharded = 0.0;
  if (grads.lora)
    for (const auto& layer : grads.lora->layers)
      for (const ProjectionInfo& info : projection_table()) {
        const LoraPair& pair = layer[static_cast<int>(info.projection)];
        if (pair.defined()) sharded += squares(shard_dim(info.projection) == 0 ? pair.B : pair.A);
      }
  if (grads.weights) {
    const Qwen3Weights& w = *grads.weights;
    sharded += squares(w.embed_tokens) + (w.tied() ? 0.0 : squares(w.lm_head));
    for (const LayerWeights& layer : w.layers)
      for (const Linear& linear : layer.projections) sharded += squares(linear.trainable_weight());
  }
  return tp.all_reduce_sum(sharded) + replicated;
}

}  // namespace qft::parallel
