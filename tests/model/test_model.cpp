// The decoder layer and the whole model against an autograd reference written from plain at:: ops
// (float64), plus the invariants training relies on: checkpointing, chunking, accumulation.
#include <cmath>
#include <map>

#include "core/files.h"
#include "model/decoder_layer.h"
#include "model/lora.h"
#include "model/ops/attention.h"
#include "model/ops/linear.h"
#include "model/ops/rope.h"
#include "model/qwen3_model.h"
#include "model_test_util.h"

using namespace qft::model;
using qft::test::autograd;
using qft::test::leaf;

namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);
using Params = std::map<std::string, at::Tensor>;

Qwen3Config tiny_config(bool tied, int64_t layers = 2, int64_t heads = 4, int64_t kv_heads = 2) {
  // head_dim 12 != hidden/heads = 8, as in real Qwen3 configs.
  nlohmann::json j = {{"model_type", "qwen3"},        {"vocab_size", 97},       {"hidden_size", 32},
                      {"intermediate_size", 48},      {"num_hidden_layers", layers},
                      {"num_attention_heads", heads}, {"num_key_value_heads", kv_heads},
                      {"head_dim", 12},               {"rms_norm_eps", 1e-6},   {"rope_theta", 10000.0},
                      {"tie_word_embeddings", tied}};
  return Qwen3Config::from_json(j, "tiny-config");
}

// Random weights with non-trivial norms (ones would hide weight-gradient bugs).
Qwen3Weights tiny_weights(const Qwen3Config& c, uint64_t seed) {
  Qwen3Weights w = Qwen3Weights::random(c, seed, 0.1, at::kDouble);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
  for (auto& [name, t] : w.named_tensors(c))
    if (name.find("norm") != std::string::npos) t.add_(at::normal(0.0, 0.2, t.sizes(), gen, f64));
  return w;
}

LoraWeights tiny_lora(const Qwen3Config& c, double dropout, bool rslora, uint64_t seed,
                      std::vector<Projection> targets = {Projection::q, Projection::k, Projection::v, Projection::o,
                                                         Projection::gate, Projection::up, Projection::down}) {
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 8;
  lc.lora_dropout = dropout;
  lc.use_rslora = rslora;
  lc.target_modules = targets;
  LoraWeights l = LoraWeights::init(c, lc, seed);
  // B = 0 at init would make every A gradient zero; a trained adapter has B != 0.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 7);
  for (auto& layer : l.layers)
    for (auto& pair : layer)
      if (pair.defined()) {
        pair.A = pair.A.to(at::kDouble);
        pair.B = at::normal(0.0, 0.3, pair.B.sizes(), gen, f64);
      }
  return l;
}

// Two rows of T = 10: one plain causal sequence; three packed samples followed by padding.
Batch tiny_batch(int64_t V, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  Batch b;
  b.input_ids = at::randint(0, V, {2, 10}, gen, i64);
  b.labels = b.input_ids.clone();
  b.labels.index_put_({0, at::indexing::Slice(0, 3)}, -100);  // a masked prompt
  b.position_ids = at::tensor({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 0, 1, 2, 0, 0, 0}, i64).view({2, 10});
  b.segment_ids = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1, -1}, i64).view({2, 10});
  b.labels.index_put_({1, at::indexing::Slice(7, 10)}, -100);
  b.labels.index_put_({1, 4}, -100);
  return b;
}

Batch row(const Batch& b, int64_t r) {
  Batch out;
  out.input_ids = b.input_ids.slice(0, r, r + 1);
  out.labels = b.labels.slice(0, r, r + 1);
  out.position_ids = b.position_ids.slice(0, r, r + 1);
  out.segment_ids = b.segment_ids.slice(0, r, r + 1);
  return out;
}

// ---- the reference ----------------------------------------------------------------------------

at::Tensor ref_rms(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
}

at::Tensor ref_rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}

struct RefLora {
  const Params* params = nullptr;  // PEFT names -> leaves
  double scaling = 1.0;
  double dropout = 0.0;
  uint64_t seed = 0;
};

// One decoder layer on x [B, T, H]; the attention mask is [B, T, T] bool.
at::Tensor ref_layer(const Qwen3Config& c, const Params& P, const RefLora* lora, int64_t i, const at::Tensor& x,
                     const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& allowed) {
  const int64_t B = x.size(0), T = x.size(1), nH = c.num_attention_heads, nKV = c.num_key_value_heads,
                D = c.head_dim;
  const std::string pre = "model.layers." + std::to_string(i) + ".";
  const double eps = c.rms_norm_eps;
  auto proj = [&](Projection p, const at::Tensor& in) {
    const std::string module = pre + projection_info(p).module;
    at::Tensor y = at::matmul(in, P.at(module + ".weight").t());
    if (lora != nullptr) {
      const std::string key = "base_model.model." + module;
      auto a = lora->params->find(key + ".lora_A.weight");
      if (a != lora->params->end()) {
        at::Tensor xd = in;
        if (lora->dropout > 0) {
          const at::Tensor keep = ops::dropout_keep_mask(
              {B * T, in.size(-1)}, lora->dropout, ops::dropout_seed_for(lora->seed, i, static_cast<int>(p)),
              at::kDouble, at::kCPU);
          xd = in * keep.view(in.sizes()) / (1.0 - lora->dropout);
        }
        y = y + lora->scaling * at::matmul(at::matmul(xd, a->second.t()), lora->params->at(key + ".lora_B.weight").t());
      }
    }
    return y;
  };
  const at::Tensor h = ref_rms(x, P.at(pre + "input_layernorm.weight"), eps);
  at::Tensor q = ref_rms(proj(Projection::q, h).view({B, T, nH, D}), P.at(pre + "self_attn.q_norm.weight"), eps);
  at::Tensor k = ref_rms(proj(Projection::k, h).view({B, T, nKV, D}), P.at(pre + "self_attn.k_norm.weight"), eps);
  const at::Tensor v = proj(Projection::v, h).view({B, T, nKV, D});
  const at::Tensor c4 = cos.unsqueeze(2), s4 = sin.unsqueeze(2);
  q = q * c4 + ref_rotate_half(q) * s4;
  k = k * c4 + ref_rotate_half(k) * s4;
  // Eager attention: repeat_kv, scaled scores, masked softmax; rows seeing nothing output 0.
  const at::Tensor qh = q.transpose(1, 2);
  const at::Tensor kh = k.transpose(1, 2).repeat_interleave(nH / nKV, 1);
  const at::Tensor vh = v.transpose(1, 2).repeat_interleave(nH / nKV, 1);
  const at::Tensor m = allowed.unsqueeze(1);
  const at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)) * std::pow(static_cast<double>(D), -0.5);
  const at::Tensor p = at::softmax(s.masked_fill(m.logical_not(), -1e30), -1) * m.to(at::kDouble);
  const at::Tensor attn = at::matmul(p, vh).transpose(1, 2).reshape({B, T, nH * D});
  const at::Tensor x2 = x + proj(Projection::o, attn);
  const at::Tensor h2 = ref_rms(x2, P.at(pre + "post_attention_layernorm.weight"), eps);
  const at::Tensor g = proj(Projection::gate, h2);
  return x2 + proj(Projection::down, g * at::sigmoid(g) * proj(Projection::up, h2));
}

at::Tensor ref_allowed(const Batch& b) {
  const int64_t T = b.input_ids.size(1);
  const at::Tensor pos = at::arange(T, at::kLong);
  const at::Tensor causal = pos.unsqueeze(1) >= pos.unsqueeze(0);
  const at::Tensor& seg = b.segment_ids;
  return causal.unsqueeze(0) & (seg.unsqueeze(2) == seg.unsqueeze(1)) & (seg >= 0).unsqueeze(2);
}

struct RefOut {
  at::Tensor logits;    // [B, T, V]
  at::Tensor loss_sum;  // scalar
  int64_t targets = 0;
};

RefOut ref_model(const Qwen3Config& c, const Params& P, const RefLora* lora, const Batch& b) {
  const int64_t B = b.input_ids.size(0), T = b.input_ids.size(1);
  const auto [cos, sin] = ops::rope_tables(b.position_ids, c.head_dim, c.rope_theta, at::kDouble);
  const at::Tensor allowed = ref_allowed(b);
  at::Tensor x = P.at("model.embed_tokens.weight").index_select(0, b.input_ids.reshape(-1)).view({B, T, -1});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) x = ref_layer(c, P, lora, i, x, cos, sin, allowed);
  x = ref_rms(x, P.at("model.norm.weight"), c.rms_norm_eps);
  RefOut out;
  out.logits = at::matmul(x, P.at(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight").t());
  // HF shift; a position whose successor is another sample (or padding) predicts nothing.
  const at::Tensor logp = at::log_softmax(out.logits.slice(1, 0, T - 1), -1);
  at::Tensor tgt = b.labels.slice(1, 1, T).clone();
  const at::Tensor same = (b.segment_ids.slice(1, 0, T - 1) == b.segment_ids.slice(1, 1, T)) &
                          (b.segment_ids.slice(1, 0, T - 1) >= 0);
  tgt.masked_fill_(same.logical_not(), -100);
  const at::Tensor valid = tgt != -100;
  out.targets = valid.sum().item<int64_t>();
  out.loss_sum = -(logp.gather(2, tgt.clamp_min(0).unsqueeze(2)).squeeze(2) * valid.to(at::kDouble)).sum();
  return out;
}

Params leaves(const std::vector<std::pair<std::string, at::Tensor>>& named) {
  Params p;
  for (const auto& [name, t] : named) p[name] = leaf(t);
  return p;
}

std::vector<at::Tensor> values(const Params& p, const std::vector<std::string>& names) {
  std::vector<at::Tensor> v;
  for (const auto& n : names) v.push_back(p.at(n));
  return v;
}

struct Case {
  bool tied = false;
  bool full = false;      // full fine-tuning (weight gradients)
  bool use_lora = true;
  double dropout = 0.0;
  bool rslora = false;
  bool checkpointing = false;
  int64_t chunk = 1024;
  int64_t heads = 4, kv_heads = 2;
};

// Runs forward_backward and the reference; compares loss and every gradient.
void check_against_reference(const Case& k) {
  const Qwen3Config c = tiny_config(k.tied, 2, k.heads, k.kv_heads);
  const Qwen3Weights w = tiny_weights(c, 11);
  const LoraWeights lora = tiny_lora(c, k.dropout, k.rslora, 12);
  const Batch batch = tiny_batch(c.vocab_size, 13);
  const double denominator = 5.5;
  const uint64_t dropout_seed = 99;

  Qwen3Model model(c, w);
  Gradients grads;
  if (k.use_lora) grads.lora = lora.zeros_like();
  if (k.full) grads.weights = w.zeros_like();
  StepOptions opt;
  opt.gradient_checkpointing = k.checkpointing;
  opt.loss_denominator = denominator;
  opt.dropout_seed = dropout_seed;
  opt.loss_chunk_tokens = k.chunk;
  const LossSum r = model.forward_backward(batch, k.use_lora ? &lora : nullptr, grads, opt);

  Params P = leaves(w.named_tensors(c));
  Params L = leaves(lora.named_tensors());
  RefLora rl{&L, lora.config.scaling(), k.dropout, dropout_seed};
  const RefOut ref = ref_model(c, P, k.use_lora ? &rl : nullptr, batch);
  EXPECT_EQ(r.target_tokens, ref.targets);
  EXPECT_NEAR(r.loss_sum, ref.loss_sum.item<double>(), 1e-10 * std::abs(ref.loss_sum.item<double>()));

  const at::Tensor scaled = ref.loss_sum / denominator;
  if (k.full) {
    const auto named = grads.weights->named_tensors(c);
    std::vector<std::string> names;
    for (const auto& [n, t] : named) names.push_back(n);
    const auto g = autograd(scaled, values(P, names));
    for (size_t i = 0; i < named.size(); ++i) QFT_EXPECT_CLOSE(named[i].second, g[i], "model_" + names[i]);
    EXPECT_EQ(grads.weights->tied(), k.tied);
  }
  if (k.use_lora) {
    const auto named = grads.lora->named_tensors();
    std::vector<std::string> names;
    for (const auto& [n, t] : named) names.push_back(n);
    const auto g = autograd(scaled, values(L, names));
    for (size_t i = 0; i < named.size(); ++i) {
      QFT_EXPECT_CLOSE(named[i].second, g[i], "model_" + names[i]);
      EXPECT_GT(g[i].abs().max().item<double>(), 0.0) << names[i];
    }
  }
}

}  // namespace

TEST(Model, LoraGradientsMatchAutograd) { check_against_reference({}); }

TEST(Model, LoraWithDropoutAndRsloraMatchesAutograd) {
  Case k;
  k.dropout = 0.2;
  k.rslora = true;
  check_against_reference(k);
}

TEST(Model, GqaRatiosMatchAutograd) {
  for (const auto [h, kv] : std::vector<std::pair<int64_t, int64_t>>{{4, 4}, {4, 1}, {2, 1}}) {
    SCOPED_TRACE(testing::Message() << h << "/" << kv);
    Case k;
    k.heads = h;
    k.kv_heads = kv;
    check_against_reference(k);
  }
}

TEST(Model, FullFineTuneUntiedMatchesAutograd) {
  Case k;
  k.full = true;
  k.use_lora = false;
  check_against_reference(k);
}

TEST(Model, FullFineTuneTiedSumsBothEmbeddingUses) {
  Case k;
  k.full = true;
  k.use_lora = false;
  k.tied = true;
  check_against_reference(k);
}

TEST(Model, FullFineTunePlusLoraWithCheckpointingAndChunks) {
  Case k;
  k.full = true;
  k.dropout = 0.1;
  k.checkpointing = true;
  k.chunk = 3;
  check_against_reference(k);
}

TEST(Model, CheckpointingAndChunkingGiveIdenticalResults) {
  const Qwen3Config c = tiny_config(false);
  const Qwen3Weights w = tiny_weights(c, 21);
  const LoraWeights lora = tiny_lora(c, 0.3, false, 22);
  const Batch batch = tiny_batch(c.vocab_size, 23);
  Qwen3Model model(c, w);
  auto run = [&](bool ckpt, int64_t chunk, bool selective = false) {
    Gradients g;
    g.lora = lora.zeros_like();
    g.weights = w.zeros_like();
    StepOptions opt;
    opt.gradient_checkpointing = ckpt;
    opt.selective_recompute = selective;
    opt.loss_chunk_tokens = chunk;
    opt.dropout_seed = 5;
    opt.loss_denominator = 9;
    const LossSum r = model.forward_backward(batch, &lora, g, opt);
    return std::make_pair(r, g);
  };
  const auto [r0, g0] = run(false, 1024);
  const auto [r1, g1] = run(true, 1024);
  EXPECT_EQ(r0.loss_sum, r1.loss_sum);  // recompute is bitwise identical, dropout masks included
  auto a = g0.lora->named_tensors(), b = g1.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  auto wa = g0.weights->named_tensors(c), wb = g1.weights->named_tensors(c);
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(at::equal(wa[i].second, wb[i].second)) << wa[i].first;
  // Selective recompute (norms, q/k norm + RoPE, SwiGLU made again in backward) is bitwise identical too.
  const auto [rs, gs] = run(false, 1024, /*selective=*/true);
  EXPECT_EQ(r0.loss_sum, rs.loss_sum);
  auto sl = gs.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, sl[i].second)) << "selective " << a[i].first;
  auto sw = gs.weights->named_tensors(c);
  for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(at::equal(wa[i].second, sw[i].second)) << "selective " << wa[i].first;
  // Chunking changes only summation order.
  const auto [r2, g2] = run(false, 2);
  EXPECT_NEAR(r2.loss_sum, r0.loss_sum, 1e-12 * r0.loss_sum);
  auto c2 = g2.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) QFT_EXPECT_CLOSE(c2[i].second, a[i].second, "chunked_" + a[i].first);
  auto wc = g2.weights->named_tensors(c);
  for (size_t i = 0; i < wa.size(); ++i) QFT_EXPECT_CLOSE(wc[i].second, wa[i].second, "chunked_" + wa[i].first);
  // A different dropout seed changes the gradients (the masks are really used).
  Gradients g3;
  g3.lora = lora.zeros_like();
  StepOptions opt;
  opt.dropout_seed = 6;
  model.forward_backward(batch, &lora, g3, opt);
  EXPECT_FALSE(at::allclose(g3.lora->layers[0][0].A, g0.lora->layers[0][0].A));
}

// The adapters cast once for a step (StepOptions::lora_compute, as the trainer passes them) give the very
// results of a call that casts them itself; each layer's context carries its groups' stacked A.
TEST(Model, AdaptersCastOncePerStepGiveTheSameStep) {
  const Qwen3Config c = tiny_config(false);
  const Qwen3Weights w = tiny_weights(c, 31).to(at::kFloat, at::kCPU);
  LoraWeights lora = tiny_lora(c, 0.0, false, 32, {Projection::q, Projection::v, Projection::gate, Projection::up});
  for (auto& layer : lora.layers)
    for (auto& p : layer)
      if (p.defined()) p = {p.A.to(at::kFloat), p.B.to(at::kFloat)};
  const Batch batch = tiny_batch(c.vocab_size, 33);
  const LoraCompute compute = LoraCompute::make(lora, at::kFloat);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const LayerContext ctx = layer_context(prepare_batch(batch, c, w), c, w, &compute, i, false, 0);
    for (int g = 0; g < kNumInputGroups; ++g) EXPECT_TRUE(ctx.lora_stacked_A[g].is_same(compute.stacked_A[i][g]));
    // The member's A are row blocks of the stack: q's the first 4 rows, v's the next 4.
    EXPECT_TRUE(at::equal(ctx.projections[0].lora->A, lora.layers[i][0].A));
    EXPECT_TRUE(at::equal(compute.stacked_A[i][0].narrow(0, 4, 4), lora.layers[i][2].A));
    EXPECT_FALSE(ctx.projections[1].lora.has_value());
  }
  Qwen3Model model(c, w);
  Gradients own, given;
  own.lora = lora.zeros_like();
  given.lora = lora.zeros_like();
  StepOptions opt;
  const LossSum r_own = model.forward_backward(batch, &lora, own, opt);
  opt.lora_compute = &compute;
  const LossSum r_given = model.forward_backward(batch, &lora, given, opt);
  EXPECT_EQ(r_own.loss_sum, r_given.loss_sum);
  const auto a = own.lora->named_tensors(), b = given.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  // Cast for another dtype than the step's activations: an error naming both.
  const LoraCompute bf16 = LoraCompute::make(lora, at::kBFloat16);
  opt.lora_compute = &bf16;
  try {
    model.forward_backward(batch, &lora, given, opt);
    ADD_FAILURE() << "adapters cast to bf16 accepted for a fp32 step";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cast to BFloat16 for a step whose activations are Float"), std::string::npos)
        << e.what();
  }
}

// The trainer refreshes one LoraCompute per step: after the masters change in place, refresh() gives
// what make() would, in the same buffers; other masters are refused.
TEST(Model, LoraComputeRefreshEqualsANewCast) {
  const Qwen3Config c = tiny_config(false);
  LoraWeights lora = tiny_lora(c, 0.0, false, 35);
  LoraCompute compute = LoraCompute::make(lora, at::kBFloat16);
  const void* stacked = compute.stacked_A[0][0].const_data_ptr();
  for (auto& layer : lora.layers)
    for (auto& pair : layer)
      if (pair.defined()) {
        pair.A.mul_(-3.0);
        pair.B.add_(0.25);
      }
  ASSERT_TRUE(compute.refresh(lora));
  EXPECT_EQ(compute.stacked_A[0][0].const_data_ptr(), stacked);
  const LoraCompute fresh = LoraCompute::make(lora, at::kBFloat16);
  for (size_t i = 0; i < lora.layers.size(); ++i) {
    for (int p = 0; p < kNumProjections; ++p) {
      if (!lora.layers[i][p].defined()) continue;
      EXPECT_TRUE(at::equal(compute.layers[i][p].A, fresh.layers[i][p].A)) << i << " " << p;
      EXPECT_TRUE(at::equal(compute.layers[i][p].B, fresh.layers[i][p].B)) << i << " " << p;
    }
    for (int g = 0; g < kNumInputGroups; ++g)
      if (fresh.stacked_A[i][g].defined()) EXPECT_TRUE(at::equal(compute.stacked_A[i][g], fresh.stacked_A[i][g]));
  }
  LoraWeights other = lora;
  other.layers[0][0].A = other.layers[0][0].A.clone();
  EXPECT_FALSE(compute.refresh(other));
}

TEST(Model, AccumulationOverMicroBatchesEqualsOneBatch) {
  const Qwen3Config c = tiny_config(true);
  const Qwen3Weights w = tiny_weights(c, 31);
  const LoraWeights lora = tiny_lora(c, 0.0, false, 32);
  const Batch batch = tiny_batch(c.vocab_size, 33);
  Qwen3Model model(c, w);
  StepOptions opt;
  opt.loss_denominator = 14;  // all targets of the step
  Gradients whole;
  whole.lora = lora.zeros_like();
  whole.weights = w.zeros_like();
  const LossSum rw = model.forward_backward(batch, &lora, whole, opt);
  Gradients acc;
  acc.lora = lora.zeros_like();
  acc.weights = w.zeros_like();
  const LossSum r0 = model.forward_backward(row(batch, 0), &lora, acc, opt);
  const LossSum r1 = model.forward_backward(row(batch, 1), &lora, acc, opt);
  EXPECT_EQ(r0.target_tokens + r1.target_tokens, rw.target_tokens);
  EXPECT_NEAR(r0.loss_sum + r1.loss_sum, rw.loss_sum, 1e-12 * rw.loss_sum);
  auto a = acc.lora->named_tensors(), b = whole.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) QFT_EXPECT_CLOSE(a[i].second, b[i].second, "accumulated_" + a[i].first);
  auto wa = acc.weights->named_tensors(c), wb = whole.weights->named_tensors(c);
  for (size_t i = 0; i < wa.size(); ++i) QFT_EXPECT_CLOSE(wa[i].second, wb[i].second, "accumulated_" + wa[i].first);
}

TEST(Model, LogitsAndForwardLossMatchReference) {
  const Qwen3Config c = tiny_config(false, 3);
  const Qwen3Weights w = tiny_weights(c, 41);
  const LoraWeights lora = tiny_lora(c, 0.5, false, 42, {Projection::q, Projection::v});
  const Batch batch = tiny_batch(c.vocab_size, 43);
  Qwen3Model model(c, w);
  Params P = leaves(w.named_tensors(c)), L = leaves(lora.named_tensors());
  RefLora rl{&L, lora.config.scaling(), 0.0, 0};  // evaluation: no dropout
  const RefOut ref = ref_model(c, P, &rl, batch);
  const at::Tensor logits = model.logits(batch, &lora);
  EXPECT_EQ(logits.scalar_type(), at::kFloat);
  // logits come back in fp32: compare at fp32 precision.
  EXPECT_LE(qft::test::rel_err(logits, ref.logits.detach()), 1e-6);
  const LossSum r = model.forward_loss(batch, &lora, 3);
  EXPECT_EQ(r.target_tokens, ref.targets);
  EXPECT_NEAR(r.loss_sum, ref.loss_sum.item<double>(), 1e-10 * ref.loss_sum.item<double>());
  // Without adapters too.
  const RefOut base = ref_model(c, P, nullptr, batch);
  EXPECT_NEAR(model.forward_loss(batch, nullptr).loss_sum, base.loss_sum.item<double>(),
              1e-10 * base.loss_sum.item<double>());
}

TEST(Model, CausalBatchWithoutSegments) {
  const Qwen3Config c = tiny_config(false);
  const Qwen3Weights w = tiny_weights(c, 51);
  Batch b = tiny_batch(c.vocab_size, 52);
  const Batch plain = Batch::causal(b.input_ids, b.labels);
  Batch explicit_ = plain;
  explicit_.segment_ids = at::zeros_like(plain.input_ids);
  Qwen3Model model(c, w);
  EXPECT_NEAR(model.forward_loss(plain, nullptr).loss_sum, model.forward_loss(explicit_, nullptr).loss_sum, 1e-12);
  Params P = leaves(w.named_tensors(c));
  EXPECT_NEAR(model.forward_loss(plain, nullptr).loss_sum, ref_model(c, P, nullptr, explicit_).loss_sum.item<double>(),
              1e-10);
}

TEST(Model, LabelsOfAnotherShapeAreAnError) {
  const Qwen3Config c = tiny_config(false);
  Batch b = tiny_batch(c.vocab_size, 53);
  b.labels = b.labels.slice(1, 0, 9);
  Qwen3Model model(c, tiny_weights(c, 54));
  EXPECT_THROW(model.forward_loss(b, nullptr), qft::Error);
}

// The batch is checked on the host before anything reaches the device: ids and labels outside the
// vocabulary are errors that say which values, not an index error inside a kernel.
TEST(Model, TokensOutsideTheVocabularyAreNamedErrors) {
  const Qwen3Config c = tiny_config(false);
  Qwen3Model model(c, tiny_weights(c, 55));
  const auto message = [&](const Batch& b) {
    try {
      model.forward_loss(b, nullptr);
    } catch (const qft::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Batch ids = tiny_batch(c.vocab_size, 56);
  ids.input_ids[0][3] = c.vocab_size;
  EXPECT_NE(message(ids).find(fmt::format("input_ids must be in [0, {})", c.vocab_size)), std::string::npos)
      << message(ids);
  Batch labels = tiny_batch(c.vocab_size, 57);
  labels.labels[1][2] = c.vocab_size + 4;  // predicted by position 1 of the same sample
  EXPECT_NE(message(labels).find(fmt::format("labels must be -100 or in [0, {}), got values in [", c.vocab_size)),
            std::string::npos)
      << message(labels);
}

TEST(Model, Float32AgreesWithFloat64) {
  const Qwen3Config c = tiny_config(false);
  const Qwen3Weights w = tiny_weights(c, 61);
  const LoraWeights lora64 = tiny_lora(c, 0.0, false, 62);
  LoraWeights lora32 = lora64;
  for (auto& layer : lora32.layers)
    for (auto& p : layer)
      if (p.defined()) p = {p.A.to(at::kFloat), p.B.to(at::kFloat)};
  const Batch batch = tiny_batch(c.vocab_size, 63);
  Qwen3Model m64(c, w), m32(c, w.to(at::kFloat, at::kCPU));
  Gradients g64, g32;
  g64.lora = lora64.zeros_like();
  g32.lora = lora32.zeros_like();
  const LossSum r64 = m64.forward_backward(batch, &lora64, g64, {});
  const LossSum r32 = m32.forward_backward(batch, &lora32, g32, {});
  // fp32 rounding only (about 1e-7 per op), so agreement to 1e-4 relative.
  EXPECT_NEAR(r32.loss_sum, r64.loss_sum, 1e-5 * r64.loss_sum);
  auto a = g32.lora->named_tensors(), b = g64.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(qft::test::rel_err(a[i].second, b[i].second), 1e-4) << a[i].first;
}

namespace {

const std::vector<Projection> kAllSeven = {Projection::q,    Projection::k,  Projection::v,   Projection::o,
                                           Projection::gate, Projection::up, Projection::down};

// Layer 0's context over `batch`'s layout in `dt`, with `lora` (null: none) attached as a step attaches it:
// dropout rate `dropout`, mask seed 3, the stacked A of each input group.
LayerContext one_layer_context(const Qwen3Config& c, const Qwen3Weights& w, const LoraCompute* lora, double dropout,
                               const Batch& batch) {
  const at::ScalarType dt = w.embed_tokens.scalar_type();
  const int64_t B = batch.input_ids.size(0), T = batch.input_ids.size(1);
  LayerContext ctx;
  ctx.config = &c;
  ctx.weights = &w.layers[0];
  if (lora != nullptr) {
    ctx.projections = layer_projections(w.layers[0], &lora->layers[0], lora->config.scaling(), dropout, 3, 0);
    ctx.lora_stacked_A = lora->stacked_A[0];
  } else {
    ctx.projections = w.layers[0].projections;
  }
  ctx.B = B;
  ctx.T = T;
  std::tie(ctx.cos, ctx.sin) = ops::rope_tables(batch.position_ids.reshape(-1), c.head_dim, c.rope_theta, dt);
  ctx.attention = ops::attention_layout(batch.segment_ids, B, T, c.head_dim, at::kCPU, dt);
  return ctx;
}

struct LayerCase {
  std::vector<Projection> targets;
  double dropout = 0.0;
  bool full = false;  // the base weights trained too
  bool rslora = false;
};

// One float64 layer, forward and backward, against autograd on the reference layer.
void check_layer_against_autograd(const LayerCase& k) {
  const Qwen3Config c = tiny_config(false, 1, 4, 2);
  const Qwen3Weights w = tiny_weights(c, 71);
  const LoraWeights lora = tiny_lora(c, k.dropout, k.rslora, 72, k.targets);
  const LoraCompute compute = LoraCompute::make(lora, at::kDouble);
  const Batch batch = tiny_batch(c.vocab_size, 73);
  const int64_t B = 2, T = 10, H = c.hidden_size;
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(74);
  const at::Tensor x = at::normal(0.0, 1.0, {B * T, H}, gen, f64);

  const LayerContext ctx = one_layer_context(c, w, &compute, k.dropout, batch);
  EXPECT_FALSE(ctx.attention.flash);
  // Each input group with an adapted member has its stacked A (what the step runs stacked when dropout is 0).
  for (int g = 0; g < kNumInputGroups; ++g) {
    bool adapted = false;
    for (Projection p : input_group_info(static_cast<InputGroup>(g)).members) adapted = adapted || lora.config.targets(p);
    EXPECT_EQ(ctx.lora_stacked_A[g].defined(), adapted) << g;
  }
  LayerActivations acts;
  const at::Tensor y = decoder_layer_forward(ctx, x, &acts);
  EXPECT_TRUE(at::equal(y, decoder_layer_forward(ctx, x, nullptr)));
  {
    // Selective recompute frees the cheap tensors and makes them again bitwise.
    LayerActivations dropped = acts;
    drop_recomputable(dropped);
    for (const at::Tensor* t : {&dropped.h_in, &dropped.q, &dropped.k, &dropped.h_post, &dropped.act})
      EXPECT_FALSE(t->defined());
    EXPECT_TRUE(dropped.q_pre.defined() && dropped.attn.defined() && dropped.gate.defined() && dropped.up.defined());
    recompute_cheap(ctx, dropped);
    for (const auto& [made, kept] : {std::pair{&dropped.h_in, &acts.h_in}, {&dropped.q, &acts.q},
                                     {&dropped.k, &acts.k}, {&dropped.h_post, &acts.h_post},
                                     {&dropped.act, &acts.act}, {&dropped.rstd_q, &acts.rstd_q}})
      EXPECT_TRUE(at::equal(*made, *kept));
  }

  const auto [cos, sin] = ops::rope_tables(batch.position_ids.reshape(-1), c.head_dim, c.rope_theta, at::kDouble);
  Params P = leaves(w.named_tensors(c)), L = leaves(lora.named_tensors());
  at::Tensor xl = leaf(x.view({B, T, H}));
  RefLora rl{&L, lora.config.scaling(), k.dropout, 3};
  const at::Tensor ref = ref_layer(c, P, &rl, 0, xl, cos.view({B, T, -1}), sin.view({B, T, -1}), ref_allowed(batch));
  QFT_EXPECT_CLOSE(y, ref.detach().view({B * T, H}), "layer_y");

  const at::Tensor dy = at::normal(0.0, 1.0, {B * T, H}, gen, f64);
  LoraWeights lg = lora.zeros_like();
  Qwen3Weights gw = w.zeros_like();
  LayerGrads grads;
  grads.lora = &lg.layers[0];
  if (k.full) grads.weights = &gw.layers[0];
  LayerActivations acts_again = acts;  // backward consumes what it is given
  const at::Tensor dx = decoder_layer_backward(ctx, dy, acts, grads);
  for (const at::Tensor& t : {acts.x, acts.h_in, acts.q, acts.attn, acts.x_mid, acts.h_post, acts.act})
    EXPECT_FALSE(t.defined());
  std::vector<std::string> names;
  for (const auto& [n, t] : lg.named_tensors()) names.push_back(n);
  EXPECT_EQ(names.size(), 2 * k.targets.size());
  std::vector<at::Tensor> inputs = values(L, names);
  inputs.push_back(xl);
  const auto wnamed = gw.named_tensors(c);
  std::vector<std::string> layer_names;
  for (const auto& [n, t] : wnamed)
    if (n.rfind("model.layers.0.", 0) == 0) layer_names.push_back(n);
  for (auto& t : values(P, layer_names)) inputs.push_back(t);
  const auto g = autograd((ref.view({B * T, H}) * dy).sum(), inputs);
  const auto lnamed = lg.named_tensors();
  for (size_t i = 0; i < names.size(); ++i) QFT_EXPECT_CLOSE(lnamed[i].second, g[i], "layer_" + names[i]);
  QFT_EXPECT_CLOSE(dx, g[names.size()].view({B * T, H}), "layer_dx");
  if (k.full) {
    size_t j = names.size() + 1;
    for (const auto& [n, t] : wnamed)
      if (n.rfind("model.layers.0.", 0) == 0) QFT_EXPECT_CLOSE(t, g[j++], "layer_" + n);
  }
  // Without dx (first layer, frozen embedding) the adapter gradients are unchanged.
  LoraWeights lg2 = lora.zeros_like();
  LayerGrads g2;
  g2.lora = &lg2.layers[0];
  EXPECT_FALSE(decoder_layer_backward(ctx, dy, acts_again, g2, /*need_dx=*/false).defined());
  auto l2 = lg2.named_tensors();
  for (size_t i = 0; i < names.size(); ++i) EXPECT_TRUE(at::allclose(l2[i].second, lnamed[i].second, 1e-12, 0));
}

}  // namespace

TEST(DecoderLayer, ForwardBackwardMatchesAutograd) {
  // With LoRA dropout every projection reads its own masked input: one projection at a time.
  for (const bool full : {false, true}) {
    SCOPED_TRACE(full);
    check_layer_against_autograd({{Projection::k, Projection::o, Projection::up}, 0.25, full, true});
  }
}

// Without dropout q/k/v and gate/up run as stacked groups (ops/lora_group.h).
TEST(DecoderLayer, StackedGroupsMatchAutograd) {
  for (const bool full : {false, true}) {
    SCOPED_TRACE(full);
    check_layer_against_autograd({kAllSeven, 0.0, full});
    check_layer_against_autograd({{Projection::q, Projection::v}, 0.0, full});
    check_layer_against_autograd({{Projection::k, Projection::up, Projection::down}, 0.0, full, true});
  }
  check_layer_against_autograd({{}, 0.0, true});  // full fine-tuning without LoRA
}

// The stacked groups against the same layer run one projection at a time (its groups' stacked A
// removed), in fp32 and bf16: fp32 within 1e-6 relative.
TEST(DecoderLayer, StackedGroupsEqualOneProjectionAtATime) {
  struct Setup {
    const char* name;
    std::vector<Projection> targets;
    double dropout;
    bool full;
  };
  const Setup setups[] = {{"all seven", kAllSeven, 0.0, false},
                          {"q and v", {Projection::q, Projection::v}, 0.0, false},
                          {"all seven, base weights trained too", kAllSeven, 0.0, true},
                          {"all seven with dropout", kAllSeven, 0.25, false}};
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    for (const Setup& s : setups) {
      SCOPED_TRACE(std::string(s.name) + (dt == at::kFloat ? ", fp32" : ", bf16"));
      const Qwen3Config c = tiny_config(false, 1, 4, 2);
      const Qwen3Weights w = tiny_weights(c, 81).to(dt, at::kCPU);
      LoraWeights lora = tiny_lora(c, s.dropout, false, 82, s.targets);
      for (auto& layer : lora.layers)
        for (auto& p : layer)
          if (p.defined()) p = {p.A.to(at::kFloat), p.B.to(at::kFloat)};  // fp32 masters, as training keeps them
      const LoraCompute compute = LoraCompute::make(lora, dt);
      const Batch batch = tiny_batch(c.vocab_size, 83);
      const LayerContext stacked = one_layer_context(c, w, &compute, s.dropout, batch);
      LayerContext single = stacked;
      single.lora_stacked_A = {};
      at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(84);
      const at::Tensor x = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64).to(dt);
      const at::Tensor dy = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64).to(dt);

      struct Run {
        at::Tensor y, dx;
        LoraWeights lora_grads;
        Qwen3Weights weight_grads;
        int forward_gemms = 0, backward_gemms = 0;
      };
      auto run = [&](const LayerContext& ctx) {
        Run r;
        LayerActivations acts;
        {
          const qft::test::OpCounter counter;
          r.y = decoder_layer_forward(ctx, x, &acts);
          r.forward_gemms = counter.gemms();
        }
        r.lora_grads = lora.zeros_like();
        r.weight_grads = w.to(at::kFloat, at::kCPU).zeros_like();
        LayerGrads grads;
        grads.lora = &r.lora_grads.layers[0];
        if (s.full) grads.weights = &r.weight_grads.layers[0];
        const qft::test::OpCounter counter;
        r.dx = decoder_layer_backward(ctx, dy, acts, grads);
        r.backward_gemms = counter.gemms();
        return r;
      };
      const Run a = run(stacked), b = run(single);
      // A group of n adapted members makes x A^T in one GEMM instead of n, and dA and the LoRA dx in two
      // instead of 2n; under dropout nothing is stacked.
      int fewer = 0;
      for (int g = 0; g < kNumInputGroups && s.dropout == 0.0; ++g) {
        int n = 0;
        for (Projection p : input_group_info(static_cast<InputGroup>(g)).members) n += lora.config.targets(p);
        fewer += std::max(n - 1, 0);
      }
      EXPECT_EQ(b.forward_gemms - a.forward_gemms, fewer);
      EXPECT_EQ(b.backward_gemms - a.backward_gemms, 2 * fewer);
      EXPECT_GT(a.forward_gemms, 0);
      std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>> pairs = {{"y", {a.y, b.y}},
                                                                                      {"dx", {a.dx, b.dx}}};
      const auto la = a.lora_grads.named_tensors(), lb = b.lora_grads.named_tensors();
      for (size_t i = 0; i < la.size(); ++i) pairs.push_back({la[i].first, {la[i].second, lb[i].second}});
      if (s.full) {
        const auto wa = a.weight_grads.named_tensors(c), wb = b.weight_grads.named_tensors(c);
        for (size_t i = 0; i < wa.size(); ++i)
          if (wa[i].first.rfind("model.layers.0.", 0) == 0) pairs.push_back({wa[i].first, {wa[i].second, wb[i].second}});
      }
      // With dropout both run one projection at a time: the very same ops.
      const double tol = s.dropout > 0 ? 0.0 : (dt == at::kFloat ? 1e-6 : 2e-2);
      double worst = 0.0;
      for (const auto& [name, t] : pairs) {
        const double e = qft::test::rel_err(t.first, t.second);
        worst = std::max(worst, e);
        EXPECT_LE(e, tol) << name;
        if (s.dropout > 0) EXPECT_TRUE(at::equal(t.first, t.second)) << name;
      }
      testing::Test::RecordProperty(std::string("worst_") + s.name + (dt == at::kFloat ? "_fp32" : "_bf16"),
                                    fmt::format("{:.3e}", worst));
      std::printf("%s %s: worst relative difference %.3e\n", s.name, dt == at::kFloat ? "fp32" : "bf16", worst);
    }
  }
}

TEST(Lora, InitIsPeftAndReproducible) {
  const Qwen3Config c = tiny_config(false);
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 16;
  lc.target_modules = {Projection::q, Projection::down};
  const LoraWeights a = LoraWeights::init(c, lc, 5), b = LoraWeights::init(c, lc, 5), d = LoraWeights::init(c, lc, 6);
  EXPECT_DOUBLE_EQ(lc.scaling(), 4.0);
  lc.use_rslora = true;
  EXPECT_DOUBLE_EQ(lc.scaling(), 8.0);
  const auto na = a.named_tensors();
  ASSERT_EQ(na.size(), 2u * 2 * 2);
  EXPECT_EQ(na[0].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(na[1].first, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  EXPECT_EQ(na[3].first, "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  EXPECT_EQ(na[0].second.sizes(), (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(na[1].second.sizes(), (std::vector<int64_t>{48, 4}));
  EXPECT_EQ(na[2].second.sizes(), (std::vector<int64_t>{4, 48}));  // down_proj A: [r, I]
  EXPECT_EQ(na[0].second.scalar_type(), at::kFloat);
  EXPECT_LE(na[0].second.abs().max().item<float>(), 1.0 / std::sqrt(32.0));
  EXPECT_LE(na[2].second.abs().max().item<float>(), 1.0 / std::sqrt(48.0));
  EXPECT_GT(na[0].second.abs().max().item<float>(), 0.8 / std::sqrt(32.0));
  EXPECT_EQ(na[1].second.abs().max().item<float>(), 0.0f);
  const auto nb = b.named_tensors(), nd = d.named_tensors();
  EXPECT_TRUE(at::equal(na[0].second, nb[0].second));
  EXPECT_FALSE(at::equal(na[0].second, nd[0].second));
  EXPECT_EQ(projection_from_name("up_proj"), Projection::up);
  EXPECT_EQ(projection_from_name("mlp.down_proj"), Projection::down);
  EXPECT_FALSE(projection_from_name("lm_head").has_value());
}

// ---- against transformers ---------------------------------------------------------------------------
// fixtures/hf_tiny_*: Qwen3ForCausalLM checkpoints with the logits, summed loss and gradients that
// transformers computed in float64 (fixtures/make_hf_tiny.py). transformers upcasts logits to fp32 for
// its loss, so loss and gradients are fp32-exact only; logits are float64 there but come back from
// Qwen3Model::logits in fp32.
namespace {

at::Tensor json_tensor(const nlohmann::json& j) { return at::tensor(j.get<std::vector<double>>(), f64); }

at::Tensor json_ids(const nlohmann::json& j) {
  std::vector<int64_t> flat;
  for (const auto& row : j)
    for (const auto& v : row) flat.push_back(v.get<int64_t>());
  return at::tensor(flat, at::kLong).view({static_cast<int64_t>(j.size()), -1});
}

void check_hf_fixture(const std::string& name, bool tied) {
  const std::string dir = std::string(QFT_SOURCE_DIR) + "/tests/model/fixtures/" + name;
  const Qwen3Config c = Qwen3Config::from_file(dir + "/config.json");
  EXPECT_EQ(c.tie_word_embeddings, tied);
  EXPECT_EQ(c.head_dim, 12);
  const Qwen3Weights w = Qwen3Weights::load(dir, c, at::kDouble, at::kCPU);
  EXPECT_EQ(w.tied(), tied);
  const nlohmann::json e = nlohmann::json::parse(qft::read_file(dir + "/expected.json"));
  const Batch batch = Batch::causal(json_ids(e["input_ids"]), json_ids(e["labels"]));
  Qwen3Model model(c, w);

  const at::Tensor logits = model.logits(batch, nullptr).to(at::kDouble).flatten();
  EXPECT_LE(qft::test::rel_err(logits, json_tensor(e["logits"])), 1e-6);

  Gradients g;
  g.weights = w.zeros_like();
  const LossSum r = model.forward_backward(batch, nullptr, g, {});
  EXPECT_EQ(r.target_tokens, e["targets"].get<int64_t>());
  EXPECT_NEAR(r.loss_sum, e["loss_sum"].get<double>(), 1e-6 * r.loss_sum);
  std::map<std::string, at::Tensor> mine;
  for (const auto& [n, t] : g.weights->named_tensors(c)) mine[n] = t;
  ASSERT_EQ(e["grads"].size(), 4u);
  for (const auto& [n, ref] : e["grads"].items()) {
    const double err = qft::test::rel_err(mine.at(n).flatten(), json_tensor(ref));
    EXPECT_LE(err, 1e-5) << n;
    ::testing::Test::RecordProperty("hf_err_" + n, fmt::format("{:.3e}", err));
  }
}

}  // namespace

TEST(HfParity, UntiedMatchesTransformers) { check_hf_fixture("hf_tiny_untied", false); }
TEST(HfParity, TiedMatchesTransformers) { check_hf_fixture("hf_tiny_tied", true); }

// ---- long context: tiled MLP, activation offloading -------------------------------------------

namespace {

Qwen3Weights as_float(const Qwen3Config& c, const Qwen3Weights& w) {
  Qwen3Weights out = w.zeros_like(at::kFloat);
  auto src = w.named_tensors(c), dst = out.named_tensors(c);
  for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
  return out;
}

LoraWeights as_float(LoraWeights lora) {
  for (auto& layer : lora.layers)
    for (auto& pair : layer)
      if (pair.defined()) {
        pair.A = pair.A.to(at::kFloat);
        pair.B = pair.B.to(at::kFloat);
      }
  return lora;
}

struct LayerRun {
  at::Tensor y, dx;
  bool saved_mlp = false;  // the forward saved any of gate, up, act (backward then releases them)
  int saving_gemms = 0;    // GEMMs of the pass that saved the activations backward read
  LoraWeights lora_grads;
  Qwen3Weights weight_grads;
};

// One layer's forward (saving) and backward with `mlp_shards` MLP chunks.
// recompute: as gradient checkpointing, a forward that saves nothing, then decoder_layer_recompute.
LayerRun run_layer(const Qwen3Config& c, const Qwen3Weights& w, const LoraWeights& lora, double dropout,
                   const at::Tensor& x, const at::Tensor& dy, int64_t mlp_shards, bool full, bool recompute = false) {
  const Batch batch = tiny_batch(c.vocab_size, 73);
  const at::ScalarType dt = x.scalar_type();
  const auto [cos, sin] = ops::rope_tables(batch.position_ids.reshape(-1), c.head_dim, c.rope_theta, dt);
  LayerContext ctx;
  ctx.config = &c;
  ctx.weights = &w.layers[0];
  ctx.projections = layer_projections(w.layers[0], &lora.layers[0], lora.config.scaling(), dropout, 3, 0);
  ctx.B = 2;
  ctx.T = 10;
  ctx.cos = cos;
  ctx.sin = sin;
  ctx.attention = ops::attention_layout(batch.segment_ids, 2, 10, c.head_dim, at::kCPU, dt);
  ctx.mlp_shards = mlp_shards;
  LayerRun r;
  LayerActivations acts;
  if (recompute) {
    r.y = decoder_layer_forward(ctx, x, nullptr);
    const qft::test::OpCounter counter;
    decoder_layer_recompute(ctx, x, acts);
    r.saving_gemms = counter.gemms();
  } else {
    const qft::test::OpCounter counter;
    r.y = decoder_layer_forward(ctx, x, &acts);
    r.saving_gemms = counter.gemms();
  }
  r.saved_mlp = acts.gate.defined() || acts.up.defined() || acts.act.defined();
  r.lora_grads = lora.zeros_like();
  r.weight_grads = w.zeros_like();
  LayerGrads grads;
  grads.lora = &r.lora_grads.layers[0];
  if (full) grads.weights = &r.weight_grads.layers[0];
  r.dx = decoder_layer_backward(ctx, dy, acts, grads);
  return r;
}

}  // namespace

TEST(DecoderLayer, TiledMlpEqualsTheWholeSequenceInFloat32) {
  const Qwen3Config c = tiny_config(false, 1, 4, 2);
  const Qwen3Weights w = as_float(c, tiny_weights(c, 81));
  const LoraWeights lora = as_float(tiny_lora(c, 0.0, false, 82));  // all seven projections
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(83);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor x = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f32);
  const at::Tensor dy = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f32);
  // fp32: rows are computed as in the whole-sequence GEMMs; the weight-gradient sums are split.
  constexpr double kFloatTol = 2e-6;
  for (const bool full : {false, true}) {
    const LayerRun whole = run_layer(c, w, lora, 0.0, x, dy, 1, full);
    EXPECT_TRUE(whole.saved_mlp);
    // 2 and 4 divide the 20 rows; 3 (7 + 7 + 6) and 6 (4 x 5) do not; 64 > 20 gives one row per chunk.
    for (const int64_t shards : {2, 3, 4, 6, 64}) {
      SCOPED_TRACE(fmt::format("full {} shards {}", full, shards));
      const LayerRun tiled = run_layer(c, w, lora, 0.0, x, dy, shards, full);
      EXPECT_FALSE(tiled.saved_mlp);
      EXPECT_LE(qft::test::rel_err(tiled.y, whole.y), kFloatTol);
      EXPECT_LE(qft::test::rel_err(tiled.dx, whole.dx), kFloatTol);
      const auto a = tiled.lora_grads.named_tensors(), b = whole.lora_grads.named_tensors();
      ASSERT_EQ(a.size(), 14u);
      for (size_t i = 0; i < a.size(); ++i)
        EXPECT_LE(qft::test::rel_err(a[i].second, b[i].second), kFloatTol) << a[i].first;
      const auto wa = tiled.weight_grads.named_tensors(c), wb = whole.weight_grads.named_tensors(c);
      for (size_t i = 0; i < wa.size(); ++i) {
        if (!full) EXPECT_EQ(wa[i].second.abs().max().item<double>(), 0.0) << wa[i].first;
        EXPECT_LE(qft::test::rel_err(wa[i].second, wb[i].second), kFloatTol) << wa[i].first;
      }
    }
  }
}

// Gradient checkpointing's recompute skips what backward never reads (down's base GEMM; a tiled MLP
// entirely) and backward from it is bitwise backward from the saving forward, LoRA dropout included.
TEST(DecoderLayer, RecomputeSkipsTheUnreadOutputAndGivesTheSameGradients) {
  const Qwen3Config c = tiny_config(false, 1, 4, 2);
  const Qwen3Weights w = tiny_weights(c, 95);
  const LoraWeights lora = tiny_lora(c, 0.3, false, 96);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(97);
  const at::Tensor x = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64);
  const at::Tensor dy = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64);
  for (const int64_t shards : {int64_t{1}, int64_t{3}}) {
    for (const bool full : {false, true}) {
      SCOPED_TRACE(fmt::format("shards {} full {}", shards, full));
      const LayerRun saved = run_layer(c, w, lora, 0.3, x, dy, shards, full);
      const LayerRun again = run_layer(c, w, lora, 0.3, x, dy, shards, full, /*recompute=*/true);
      EXPECT_TRUE(at::equal(again.y, saved.y));
      EXPECT_TRUE(at::equal(again.dx, saved.dx));
      const auto a = again.lora_grads.named_tensors(), b = saved.lora_grads.named_tensors();
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
      const auto wa = again.weight_grads.named_tensors(c), wb = saved.weight_grads.named_tensors(c);
      for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(at::equal(wa[i].second, wb[i].second)) << wa[i].first;
      // Attention's GEMMs always: base, LoRA A and LoRA B of q, k, v and o (dropout masks differ per
      // projection, so no stacked A). Untiled, the MLP's too but down's base GEMM and LoRA B product;
      // tiled, none of the MLP's.
      if (shards == 1) EXPECT_EQ(saved.saving_gemms - again.saving_gemms, 2);
      EXPECT_EQ(again.saving_gemms, shards == 1 ? 4 * 3 + 2 * 3 + 1 : 4 * 3);
    }
  }
}

TEST(DecoderLayer, TiledMlpWithDropoutIsDeterministicAndItsBackwardIsItsForwardsGradient) {
  // Each chunk draws its own dropout mask: not the whole sequence's, but the same in forward, in the
  // recompute and in backward. The backward must be the derivative of the tiled forward: checked along
  // random directions in x and in down's LoRA factors (central differences, float64).
  const Qwen3Config c = tiny_config(false, 1, 4, 2);
  const Qwen3Weights w = tiny_weights(c, 91);
  LoraWeights lora = tiny_lora(c, 0.3, false, 92);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(93);
  const at::Tensor x = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64);
  const at::Tensor dy = at::normal(0.0, 1.0, {20, c.hidden_size}, gen, f64);
  const int64_t shards = 3;
  const LayerRun tiled = run_layer(c, w, lora, 0.3, x, dy, shards, false);
  EXPECT_TRUE(at::equal(tiled.y, run_layer(c, w, lora, 0.3, x, dy, shards, false).y));
  // The masks are really per chunk and really used: not the whole sequence's, and not absent.
  EXPECT_FALSE(at::allclose(tiled.y, run_layer(c, w, lora, 0.3, x, dy, 1, false).y));
  EXPECT_FALSE(at::allclose(tiled.y, run_layer(c, w, lora, 0.0, x, dy, shards, false).y));
  auto objective = [&](const at::Tensor& input, const LoraWeights& l) {
    return (run_layer(c, w, l, 0.3, input, dy, shards, false).y * dy).sum().item<double>();
  };
  const double eps = 1e-6;
  const at::Tensor vx = at::normal(0.0, 1.0, x.sizes(), gen, f64);
  const double fd_x = (objective(x + eps * vx, lora) - objective(x - eps * vx, lora)) / (2 * eps);
  EXPECT_NEAR((tiled.dx * vx).sum().item<double>(), fd_x, 1e-6 * std::abs(fd_x));
  for (const Projection p : {Projection::gate, Projection::up, Projection::down}) {
    for (const bool factor_a : {true, false}) {
      SCOPED_TRACE(fmt::format("{} {}", projection_info(p).module, factor_a ? "A" : "B"));
      auto factor = [&](LoraWeights& l) -> at::Tensor& {
        LoraPair& pair = l.layers[0][static_cast<int>(p)];
        return factor_a ? pair.A : pair.B;
      };
      const at::Tensor v = at::normal(0.0, 1.0, factor(lora).sizes(), gen, f64);
      LoraWeights plus = lora, minus = lora;
      factor(plus) = factor(lora) + eps * v;
      factor(minus) = factor(lora) - eps * v;
      const double fd = (objective(x, plus) - objective(x, minus)) / (2 * eps);
      LoraWeights grads = tiled.lora_grads;
      EXPECT_NEAR((factor(grads) * v).sum().item<double>(), fd, 1e-6 * std::abs(fd) + 1e-9);
    }
  }
}

TEST(Model, TiledMlpAndActivationOffloadingInATrainingStep) {
  const Qwen3Config c = tiny_config(false, 3);
  const Qwen3Weights w = as_float(c, tiny_weights(c, 101));
  const Batch batch = tiny_batch(c.vocab_size, 103);
  Qwen3Model model(c, w);
  auto run = [&](const LoraWeights& lora, bool full, bool ckpt, bool tiled, int64_t shards, ActivationOffload* offload) {
    Gradients g;
    g.lora = lora.zeros_like();
    if (full) g.weights = w.zeros_like();
    StepOptions opt;
    opt.gradient_checkpointing = ckpt;
    opt.tiled_mlp = tiled;
    opt.tiled_mlp_num_shards = shards;
    opt.activation_offload = offload;
    opt.dropout_seed = 5;
    opt.loss_denominator = 9;
    const LossSum r = model.forward_backward(batch, &lora, g, opt);
    return std::make_pair(r, g);
  };
  auto all_grads = [&](const Gradients& g) {
    std::vector<std::pair<std::string, at::Tensor>> out = g.lora->named_tensors();
    if (g.weights)
      for (auto& t : g.weights->named_tensors(c)) out.push_back(t);
    return out;
  };
  // Offloading moves the checkpointed inputs and back: bitwise the same step, dropout masks included, for
  // all layers or the first two of three, over two steps that reuse the host buffers.
  {
    const LoraWeights lora = as_float(tiny_lora(c, 0.2, false, 102));
    const auto [r0, g0] = run(lora, true, true, false, 0, nullptr);
    for (const int64_t layers : {3, 2}) {
      ActivationOffload offload(layers);
      for (int step = 0; step < 2; ++step) {
        SCOPED_TRACE(fmt::format("offloaded layers {} step {}", layers, step));
        const auto [r1, g1] = run(lora, true, true, false, 0, &offload);
        EXPECT_EQ(r1.loss_sum, r0.loss_sum);
        const auto a = all_grads(g1), b = all_grads(g0);
        for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
      }
      EXPECT_EQ(offload.host_bytes(), layers * 20 * c.hidden_size * 4);
    }
    // Without gradient checkpointing nothing is offloaded (every activation is kept on the device).
    ActivationOffload unused(3);
    run(lora, false, false, false, 0, &unused);
    EXPECT_EQ(unused.host_bytes(), 0);
  }
  // Tiled MLP: the same step up to fp32 summation order (no dropout: the masks would be drawn per chunk),
  // with and without checkpointing (the recompute is tiled too), with offloading on top.
  const LoraWeights lora = as_float(tiny_lora(c, 0.0, false, 102));
  for (const bool full : {false, true}) {
    const auto [r0, g0] = run(lora, full, false, false, 0, nullptr);
    for (const auto& [ckpt, shards] : {std::pair{false, int64_t{3}}, {true, int64_t{7}}, {true, int64_t{0}}}) {
      SCOPED_TRACE(fmt::format("full {} checkpointing {} shards {}", full, ckpt, shards));
      ActivationOffload offload(2);
      const auto [r1, g1] = run(lora, full, ckpt, true, shards, ckpt ? &offload : nullptr);
      EXPECT_NEAR(r1.loss_sum, r0.loss_sum, 1e-6 * std::abs(r0.loss_sum));
      const auto a = all_grads(g1), b = all_grads(g0);
      // Three layers of fp32 rounding differences (measured up to 2.3e-6 of the largest element).
      for (size_t i = 0; i < a.size(); ++i) EXPECT_LE(qft::test::rel_err(a[i].second, b[i].second), 1e-5) << a[i].first;
    }
  }
  // The automatic chunk count is ALST's ceil(tokens / hidden_size); one chunk is the untiled MLP.
  StepOptions opt;
  opt.tiled_mlp = true;
  EXPECT_EQ(tiled_mlp_shards(opt, 20, 32), 1);
  EXPECT_EQ(tiled_mlp_shards(opt, 524288, 4096), 128);
  opt.tiled_mlp_num_shards = 5;
  EXPECT_EQ(tiled_mlp_shards(opt, 524288, 4096), 5);
  opt.tiled_mlp = false;
  EXPECT_EQ(tiled_mlp_shards(opt, 524288, 4096), 1);
}

// recompute_num_layers (Megatron's recompute_method: block): the first N layers are checkpointed, the
// others recompute only their cheap activations. Bitwise the same step for every N, dropout masks
// included, with the checkpointed inputs offloaded; each layer checkpointed adds exactly one layer's
// recompute GEMMs, so the layers above N really keep their activations.
TEST(Model, RecomputingOnlyTheFirstLayersGivesTheSameStep) {
  const Qwen3Config c = tiny_config(false, 3);
  const Qwen3Weights w = tiny_weights(c, 111);
  const LoraWeights lora = tiny_lora(c, 0.2, false, 112);
  const Batch batch = tiny_batch(c.vocab_size, 113);
  Qwen3Model model(c, w);
  struct Step {
    LossSum loss;
    Gradients grads;
    int gemms = 0;
  };
  auto run = [&](bool ckpt, int64_t recompute_num_layers, ActivationOffload* offload, bool residuals = false) {
    Step s;
    s.grads.lora = lora.zeros_like();
    s.grads.weights = w.zeros_like();
    StepOptions opt;
    opt.gradient_checkpointing = ckpt;
    opt.recompute_num_layers = recompute_num_layers;
    opt.checkpoint_residuals = residuals;
    opt.activation_offload = offload;
    opt.dropout_seed = 7;
    opt.loss_denominator = 9;
    const qft::test::OpCounter counter;
    s.loss = model.forward_backward(batch, &lora, s.grads, opt);
    s.gemms = counter.gemms();
    return s;
  };
  const Step none = run(false, -1, nullptr);
  const Step all = run(true, -1, nullptr);
  const int per_layer = (all.gemms - none.gemms) / 3;
  ASSERT_GT(per_layer, 0);
  ASSERT_EQ(all.gemms - none.gemms, 3 * per_layer);
  // checkpoint_residuals: o's base GEMM and its LoRA up-projection are not run again in a recompute.
  const Step residuals = run(true, -1, nullptr, true);
  const int per_layer_with_residual = (residuals.gemms - none.gemms) / 3;
  EXPECT_EQ(residuals.gemms - none.gemms, 3 * per_layer_with_residual);
  EXPECT_EQ(per_layer_with_residual, per_layer - 2);
  for (const auto& [n, with_residual] : {std::pair{int64_t{0}, false}, {int64_t{1}, false}, {int64_t{2}, false},
                                         {int64_t{3}, false}, {int64_t{-1}, true}, {int64_t{2}, true}}) {
    SCOPED_TRACE(fmt::format("recompute_num_layers {} checkpoint_residuals {}", n, with_residual));
    ActivationOffload offload(std::max<int64_t>(n, 1) + (n < 0 ? 1 : 0));  // 2 of 3 layers when n is -1
    const Step s = run(true, n, n != 0 ? &offload : nullptr, with_residual);
    const int64_t checkpointed = n < 0 ? 3 : n;
    EXPECT_EQ(s.gemms - none.gemms, checkpointed * (with_residual ? per_layer_with_residual : per_layer));
    EXPECT_EQ(s.loss.loss_sum, none.loss.loss_sum);
    const auto a = s.grads.lora->named_tensors(), b = none.grads.lora->named_tensors();
    for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
    const auto wa = s.grads.weights->named_tensors(c), wb = none.grads.weights->named_tensors(c);
    for (size_t i = 0; i < wa.size(); ++i) EXPECT_TRUE(at::equal(wa[i].second, wb[i].second)) << wa[i].first;
    // The offloaded layers' inputs, and with checkpoint_residuals their mid residuals: [20, hidden] fp64 each.
    if (n != 0)
      EXPECT_EQ(offload.host_bytes(), offload.offloaded_layers() * (with_residual ? 2 : 1) * 20 * c.hidden_size * 8);
  }
  // Which layers do what.
  StepOptions opt;
  opt.gradient_checkpointing = true;
  opt.recompute_num_layers = 2;
  EXPECT_EQ(layer_recompute(opt, 1), LayerRecompute::full);
  EXPECT_EQ(layer_recompute(opt, 2), LayerRecompute::cheap);
  opt.recompute_num_layers = -1;
  EXPECT_EQ(layer_recompute(opt, 2), LayerRecompute::full);
  opt.gradient_checkpointing = false;
  EXPECT_EQ(layer_recompute(opt, 0), LayerRecompute::none);
  opt.selective_recompute = true;
  EXPECT_EQ(layer_recompute(opt, 0), LayerRecompute::cheap);
}

TEST(ActivationOffload, RestoresWhatWasSavedAndRefusesWhatWasNot) {
  ActivationOffload offload(2);
  EXPECT_TRUE(offload.offloads(0) && offload.offloads(1) && !offload.offloads(2));
  const at::Tensor a = at::arange(12, at::TensorOptions().dtype(at::kFloat)).view({3, 4});
  const at::Tensor b = a * 2, kept = a * 3;
  EXPECT_FALSE(offload.save(0, a).defined());
  EXPECT_FALSE(offload.save(1, b).defined());
  EXPECT_TRUE(offload.save(2, kept).is_same(kept));
  EXPECT_TRUE(offload.restore(2, kept).is_same(kept));  // starts bringing back layer 1
  const at::Tensor b_back = offload.restore(1, at::Tensor());
  EXPECT_TRUE(at::equal(b_back, b));
  EXPECT_NE(b_back.data_ptr(), b.data_ptr());
  EXPECT_TRUE(at::equal(offload.restore(0, at::Tensor()), a));
  // Layer 0 was given back already: a second restore has nothing to return.
  EXPECT_THROW(offload.restore(0, at::Tensor()), qft::Error);
  // A layer's mid residual travels beside its input, each restored as itself; one never saved is refused.
  EXPECT_FALSE(offload.save(0, a, ActivationOffload::Part::input).defined());
  EXPECT_FALSE(offload.save(0, b, ActivationOffload::Part::mid_residual).defined());
  EXPECT_FALSE(offload.save(1, kept, ActivationOffload::Part::input).defined());
  EXPECT_TRUE(at::equal(offload.restore(1, at::Tensor()), kept));  // starts both of layer 0's
  EXPECT_THROW(offload.restore(1, at::Tensor(), ActivationOffload::Part::mid_residual), qft::Error);
  EXPECT_TRUE(at::equal(offload.restore(0, at::Tensor(), ActivationOffload::Part::mid_residual), b));
  EXPECT_TRUE(at::equal(offload.restore(0, at::Tensor()), a));
  EXPECT_EQ(offload.host_bytes(), 3 * 12 * 4);
}
