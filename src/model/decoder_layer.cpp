#include "model/decoder_layer.h"

#include <optional>
#include <vector>

#include "model/ops/attention.h"
#include "model/ops/linear.h"
#include "model/ops/lora_group.h"
#include "model/ops/qk_norm_rope.h"
#include "model/ops/rms_norm.h"
#include "model/ops/swiglu.h"
#include "model/ops/tiled_mlp.h"

namespace qft::model {
namespace {

const Linear& projection(const LayerContext& ctx, Projection p) { return ctx.projections[static_cast<int>(p)]; }

at::Tensor project(const LayerContext& ctx, Projection p, const at::Tensor& x, LayerActivations* acts) {
  at::Tensor* xa = acts != nullptr ? &acts->xa[static_cast<int>(p)] : nullptr;
  return ops::linear_forward(projection(ctx, p), x, xa);
}

ops::LinearGrads linear_grads(const LayerContext& ctx, Projection p, const LayerGrads& grads, bool need_dx) {
  ops::LinearGrads g;
  g.dW = grads.weights != nullptr ? &(*grads.weights)[p].trainable_weight() : nullptr;
  if (projection(ctx, p).lora && grads.lora != nullptr) {
    LoraPair& pair = (*grads.lora)[static_cast<int>(p)];
    g.dA = &pair.A;
    g.dB = &pair.B;
  }
  g.need_dx = need_dx;
  return g;
}

at::Tensor project_backward(const LayerContext& ctx, Projection p, const at::Tensor& dy, const at::Tensor& x,
                            const LayerActivations& acts, const LayerGrads& grads, bool need_dx) {
  return ops::linear_backward(projection(ctx, p), dy, x, acts.xa[static_cast<int>(p)],
                              linear_grads(ctx, p, grads, need_dx));
}

// q/k/v (or gate/up) read one input: one op for all of them, whose LoRA A GEMMs are one (ops/lora_group.h).
ops::LinearGroup input_group(const LayerContext& ctx, InputGroup g) {
  ops::LinearGroup group;
  for (Projection p : input_group_info(g).members) group.members.push_back(&projection(ctx, p));
  group.stacked_A = ctx.lora_stacked_A[static_cast<int>(g)];
  return group;
}

std::vector<at::Tensor> project_group(const LayerContext& ctx, InputGroup g, const at::Tensor& x,
                                      LayerActivations* acts) {
  std::vector<at::Tensor*> xa;
  if (acts != nullptr)
    for (Projection p : input_group_info(g).members) xa.push_back(&acts->xa[static_cast<int>(p)]);
  return ops::lora_group_forward(input_group(ctx, g), x, acts != nullptr ? &xa : nullptr);
}

// The group's input gradient: the sum of its members'.
at::Tensor project_group_backward(const LayerContext& ctx, InputGroup g, const std::vector<at::Tensor>& dy,
                                  const at::Tensor& x, const LayerActivations& acts, const LayerGrads& grads,
                                  bool need_dx) {
  std::vector<at::Tensor> xa;
  std::vector<ops::LinearGrads> member_grads;
  for (Projection p : input_group_info(g).members) {
    xa.push_back(acts.xa[static_cast<int>(p)]);
    member_grads.push_back(linear_grads(ctx, p, grads, need_dx));
  }
  return ops::lora_group_backward(input_group(ctx, g), dy, x, xa, member_grads, need_dx);
}

at::Tensor hook(const std::function<at::Tensor(at::Tensor)>& f, at::Tensor t) { return f ? f(std::move(t)) : t; }

}  // namespace

std::array<Linear, kNumProjections> layer_projections(const LayerWeights& weights,
                                                      const std::array<LoraPair, kNumProjections>* lora, double scaling,
                                                      double dropout, uint64_t dropout_seed, int64_t layer) {
  std::array<Linear, kNumProjections> out = weights.projections;
  if (lora == nullptr) return out;
  for (const ProjectionInfo& info : projection_table()) {
    const LoraPair& pair = (*lora)[static_cast<int>(info.projection)];
    if (!pair.defined()) continue;
    LoraBranch branch;
    branch.A = pair.A;
    branch.B = pair.B;
    branch.scaling = scaling;
    branch.dropout = dropout;
    branch.dropout_seed = ops::dropout_seed_for(dropout_seed, layer, static_cast<int>(info.projection));
    out[static_cast<int>(info.projection)].lora = branch;
  }
  return out;
}

namespace {

// The forward; without `output` (the recompute before backward) it stops once the activations are saved.
// `kept_mid` (recompute only): the residual after attention, kept since forward, so that o's GEMM (and
// its tensor-parallel reduction) is not run again. `mid_out` (forward): where to leave that residual.
at::Tensor layer_forward(const LayerContext& ctx, const at::Tensor& x, LayerActivations* acts, bool output,
                         const at::Tensor& kept_mid = at::Tensor(), at::Tensor* mid_out = nullptr) {
  const Qwen3Config& c = *ctx.config;
  const LayerWeights& w = *ctx.weights;
  const int64_t nH = c.num_attention_heads, nKV = c.num_key_value_heads, D = c.head_dim;
  const double eps = c.rms_norm_eps;
  const ShardedLayerHooks& s = ctx.sharded;
  LayerActivations local;
  LayerActivations& a = acts != nullptr ? *acts : local;

  // Attention block.
  a.x = x;
  a.h_in = hook(s.column_input, ops::rms_norm_forward(x, w.input_layernorm, eps, &a.rstd_in));
  const int64_t N = a.h_in.size(0);
  const std::vector<at::Tensor> qkv = project_group(ctx, InputGroup::attention, a.h_in, acts);
  a.q_pre = qkv[0].view({N, nH, D});
  a.k_pre = qkv[1].view({N, nKV, D});
  a.v = qkv[2].view({N, nKV, D});
  // Qwen3 normalises q and k per head before RoPE.
  a.q = ops::qk_norm_rope_forward(a.q_pre, w.q_norm, eps, ctx.cos, ctx.sin, &a.rstd_q);
  a.k = ops::qk_norm_rope_forward(a.k_pre, w.k_norm, eps, ctx.cos, ctx.sin, &a.rstd_k);
  a.attn = ops::attention_forward(a.q.view({ctx.B, ctx.T, nH, D}), a.k.view({ctx.B, ctx.T, nKV, D}),
                                  a.v.view({ctx.B, ctx.T, nKV, D}), ctx.attention, &a.lse)
               .view({N, nH * D});
  if (kept_mid.defined()) {
    // Backward reads o's input and LoRA product, not its output.
    a.xa[static_cast<int>(Projection::o)] = ops::lora_input_projection(projection(ctx, Projection::o), a.attn);
    a.x_mid = kept_mid;
  } else {
    a.x_mid = x + hook(s.row_output, project(ctx, Projection::o, a.attn, acts));
  }
  if (mid_out != nullptr) *mid_out = a.x_mid;

  // MLP block.
  a.h_post = hook(s.column_input, ops::rms_norm_forward(a.x_mid, w.post_attention_layernorm, eps, &a.rstd_post));
  if (ctx.mlp_shards > 1) {
    // A tiled MLP keeps nothing: its backward makes each chunk again, down's LoRA product included, so
    // the recompute ends here.
    if (!output) return at::Tensor();
    return a.x_mid + hook(s.row_output, ops::tiled_mlp_forward(input_group(ctx, InputGroup::mlp),
                                                               projection(ctx, Projection::down), a.h_post,
                                                               ctx.mlp_shards));
  }
  const std::vector<at::Tensor> gate_up = project_group(ctx, InputGroup::mlp, a.h_post, acts);
  a.gate = gate_up[0];
  a.up = gate_up[1];
  a.act = ops::swiglu_forward(a.gate, a.up);
  if (!output) {
    // Backward reads down's input and LoRA product, never its output: its base GEMM (a quarter of the
    // layer's forward FLOPs at 8B; a dequantization too under NF4) and the reduction after it are skipped.
    a.xa[static_cast<int>(Projection::down)] = ops::lora_input_projection(projection(ctx, Projection::down), a.act);
    return at::Tensor();
  }
  return a.x_mid + hook(s.row_output, project(ctx, Projection::down, a.act, acts));
}

}  // namespace

at::Tensor decoder_layer_forward(const LayerContext& ctx, const at::Tensor& x, LayerActivations* acts,
                                 at::Tensor* mid_residual) {
  return layer_forward(ctx, x, acts, /*output=*/true, at::Tensor(), mid_residual);
}

void decoder_layer_recompute(const LayerContext& ctx, const at::Tensor& x, LayerActivations& acts,
                             const at::Tensor& mid_residual) {
  layer_forward(ctx, x, &acts, /*output=*/false, mid_residual);
}

void drop_recomputable(LayerActivations& a) {
  a.h_in = at::Tensor();
  a.q = at::Tensor();
  a.k = at::Tensor();
  a.h_post = at::Tensor();
  a.act = at::Tensor();
}

void recompute_cheap(const LayerContext& ctx, LayerActivations& a) {
  const Qwen3Config& c = *ctx.config;
  const LayerWeights& w = *ctx.weights;
  const double eps = c.rms_norm_eps;
  const ShardedLayerHooks& s = ctx.sharded;
  // The same ops as the forward, on the same saved inputs: the same values (rstd included).
  a.h_in = hook(s.column_input, ops::rms_norm_forward(a.x, w.input_layernorm, eps, &a.rstd_in));
  a.q = ops::qk_norm_rope_forward(a.q_pre, w.q_norm, eps, ctx.cos, ctx.sin, &a.rstd_q);
  a.k = ops::qk_norm_rope_forward(a.k_pre, w.k_norm, eps, ctx.cos, ctx.sin, &a.rstd_k);
  a.h_post = hook(s.column_input, ops::rms_norm_forward(a.x_mid, w.post_attention_layernorm, eps, &a.rstd_post));
  if (a.gate.defined()) a.act = ops::swiglu_forward(a.gate, a.up);  // a tiled MLP keeps neither
}

at::Tensor decoder_layer_backward(const LayerContext& ctx, at::Tensor dy, LayerActivations& a, const LayerGrads& grads,
                                  bool need_dx) {
  const Qwen3Config& c = *ctx.config;
  const LayerWeights& w = *ctx.weights;
  const int64_t N = a.h_in.size(0), nH = c.num_attention_heads, nKV = c.num_key_value_heads, D = c.head_dim;
  const ShardedLayerHooks& s = ctx.sharded;
  LayerWeights* gw = grads.weights;
  // Each saved activation and each gradient is released as soon as nothing below reads it: at long
  // context every [N, H] tensor is gigabytes, and the peak is where attention's backward runs.

  // MLP block: y = x_mid + down(swiglu(gate(h), up(h))), h = norm(x_mid).
  at::Tensor dh_post;
  if (ctx.mlp_shards > 1) {
    ops::TiledMlpGrads tg{linear_grads(ctx, Projection::gate, grads, true),
                          linear_grads(ctx, Projection::up, grads, true),
                          linear_grads(ctx, Projection::down, grads, true)};
    dh_post = ops::tiled_mlp_backward(input_group(ctx, InputGroup::mlp), projection(ctx, Projection::down),
                                      hook(s.row_output_grad, dy), a.h_post, ctx.mlp_shards, tg);
  } else {
    at::Tensor dact = project_backward(ctx, Projection::down, hook(s.row_output_grad, dy), a.act, a, grads, true);
    a.act.reset();
    auto [dgate, dup] = ops::swiglu_backward(dact, a.gate, a.up);
    dact.reset();
    a.gate.reset();
    a.up.reset();
    dh_post =
        project_group_backward(ctx, InputGroup::mlp, {std::move(dgate), std::move(dup)}, a.h_post, a, grads, true);
  }
  a.h_post.reset();
  dh_post = hook(s.column_input_grad, std::move(dh_post));  // one reduction for gate and up together
  at::Tensor dx_mid = dy + ops::rms_norm_backward(dh_post, a.x_mid, w.post_attention_layernorm, a.rstd_post,
                                                  gw ? &gw->post_attention_layernorm : nullptr);
  dh_post.reset();
  dy.reset();
  a.x_mid.reset();

  // Attention block: x_mid = x + o(attention(rope(qnorm(q(h))), rope(knorm(k(h))), v(h))), h = norm(x).
  at::Tensor dattn = project_backward(ctx, Projection::o, hook(s.row_output_grad, dx_mid), a.attn, a, grads, true);
  ops::AttentionGrads ag = ops::attention_backward(
      dattn.view({ctx.B, ctx.T, nH, D}), a.q.view({ctx.B, ctx.T, nH, D}), a.k.view({ctx.B, ctx.T, nKV, D}),
      a.v.view({ctx.B, ctx.T, nKV, D}), a.attn.view({ctx.B, ctx.T, nH, D}), a.lse, ctx.attention);
  dattn.reset();
  for (at::Tensor* t : {&a.attn, &a.lse, &a.q, &a.k, &a.v}) t->reset();
  at::Tensor dq = ops::qk_norm_rope_backward(ag.dq.view({N, nH, D}), a.q_pre, w.q_norm, a.rstd_q, ctx.cos, ctx.sin,
                                             gw ? &gw->q_norm : nullptr);
  ag.dq.reset();
  a.q_pre.reset();
  at::Tensor dk = ops::qk_norm_rope_backward(ag.dk.view({N, nKV, D}), a.k_pre, w.k_norm, a.rstd_k, ctx.cos, ctx.sin,
                                             gw ? &gw->k_norm : nullptr);
  ag.dk.reset();
  a.k_pre.reset();
  // Without dx (first layer, frozen embedding) only the q/k/v weight gradients remain to be made,
  // unless the input norm is trained, whose gradient needs dh_in.
  const bool dh_needed = need_dx || gw != nullptr;
  std::vector<at::Tensor> dqkv{dq.view({N, nH * D}), dk.view({N, nKV * D}), ag.dv.view({N, nKV * D})};
  dq.reset();
  dk.reset();
  ag.dv.reset();
  at::Tensor dh_in = project_group_backward(ctx, InputGroup::attention, dqkv, a.h_in, a, grads, dh_needed);
  dqkv.clear();
  a.h_in.reset();
  for (at::Tensor& t : a.xa) t.reset();
  if (!dh_needed) return at::Tensor();
  dh_in = hook(s.column_input_grad, std::move(dh_in));  // one reduction for q, k and v together
  const at::Tensor dx =
      ops::rms_norm_backward(dh_in, a.x, w.input_layernorm, a.rstd_in, gw ? &gw->input_layernorm : nullptr);
  dh_in.reset();
  a.x.reset();
  return need_dx ? dx_mid.add_(dx) : at::Tensor();
}

}  // namespace qft::model
