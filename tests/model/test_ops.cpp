// Every op's explicit backward against autograd on random float64 inputs.
#include <cmath>

#include "model/ops/attention.h"
#include "model/ops/cross_entropy.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/rms_norm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"
#include "model_test_util.h"

using namespace qft::model;
using qft::test::autograd;
using qft::test::leaf;

namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);

at::Tensor randn(at::IntArrayRef shape, at::Generator& gen, double scale = 1.0) {
  return at::normal(0.0, scale, shape, gen, f64);
}

at::Tensor ref_rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}

}  // namespace

TEST(Ops, RmsNormMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  for (const auto& shape : std::vector<std::vector<int64_t>>{{5, 16}, {3, 4, 6}}) {
    const int64_t C = shape.back();
    at::Tensor x = leaf(randn(shape, gen)), w = leaf(1.0 + randn({C}, gen, 0.3));
    const double eps = 1e-6;
    const at::Tensor ref = w * (x * at::rsqrt(x.pow(2).mean(-1, true) + eps));
    at::Tensor rstd;
    const at::Tensor y = ops::rms_norm_forward(x.detach(), w.detach(), eps, &rstd);
    QFT_EXPECT_CLOSE(y, ref.detach(), "rms_norm_y");
    const at::Tensor dy = randn(shape, gen);
    const auto g = autograd((ref * dy).sum(), {x, w});
    at::Tensor dw = at::zeros({C}, f64);
    const at::Tensor dx = ops::rms_norm_backward(dy, x.detach(), w.detach(), rstd, &dw);
    QFT_EXPECT_CLOSE(dx, g[0], "rms_norm_dx");
    QFT_EXPECT_CLOSE(dw, g[1], "rms_norm_dw");
    // Frozen weight: no weight gradient, same dx.
    QFT_EXPECT_CLOSE(ops::rms_norm_backward(dy, x.detach(), w.detach(), rstd, nullptr), g[0], "rms_norm_dx_frozen");
  }
}

TEST(Ops, RmsNormCastsBeforeTheWeight) {
  // transformers: weight * normalised.to(input_dtype); the product rounds separately in bf16.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor x = randn({4, 32}, gen).to(at::kBFloat16), w = (1.0 + randn({32}, gen, 0.3)).to(at::kBFloat16);
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor expected = w * (xf * at::rsqrt(xf.pow(2).mean(-1, true) + 1e-6)).to(at::kBFloat16);
  const at::Tensor y = ops::rms_norm_forward(x, w, 1e-6, nullptr);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(y, expected));
}

TEST(Ops, RopeTablesAreTransformers) {
  const int64_t D = 12;
  const double theta = 1e6;
  const at::Tensor pos = at::tensor({0, 1, 5, 4095}, at::kLong);
  const auto [cos, sin] = ops::rope_tables(pos, D, theta, at::kFloat);
  // Independent: inv_freq[i] = 1 / theta^(2i/D) in fp32, freqs = pos * inv_freq, emb = [freqs, freqs].
  std::vector<float> inv(D / 2);
  for (int64_t i = 0; i < D / 2; ++i)
    inv[i] = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(D));
  const at::Tensor inv_t = at::tensor(inv);
  const at::Tensor freqs = pos.to(at::kFloat).unsqueeze(1) * inv_t;
  const at::Tensor emb = at::cat({freqs, freqs}, 1);
  EXPECT_LE((cos - emb.cos()).abs().max().item<float>(), 1e-6);
  EXPECT_LE((sin - emb.sin()).abs().max().item<float>(), 1e-6);
  EXPECT_EQ(cos.sizes(), (std::vector<int64_t>{4, D}));
}

TEST(Ops, RopeMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const int64_t N = 7, nh = 3, D = 10;
  const at::Tensor pos = at::tensor({0, 1, 2, 0, 1, 7, 30}, at::kLong);
  const auto [cos, sin] = ops::rope_tables(pos, D, 10000.0, at::kDouble);
  at::Tensor x = leaf(randn({N, nh, D}, gen));
  const at::Tensor ref = x * cos.unsqueeze(1) + ref_rotate_half(x) * sin.unsqueeze(1);
  QFT_EXPECT_CLOSE(ops::rope_forward(x.detach(), cos, sin), ref.detach(), "rope_y");
  const at::Tensor dy = randn({N, nh, D}, gen);
  const auto g = autograd((ref * dy).sum(), {x});
  QFT_EXPECT_CLOSE(ops::rope_backward(dy, cos, sin), g[0], "rope_dx");
}

namespace {

// Plain attention: repeat_kv, masked softmax; rows that see nothing give 0.
at::Tensor ref_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& allowed) {
  const int64_t nH = q.size(2), nKV = k.size(2), D = q.size(3);
  const at::Tensor qh = q.transpose(1, 2);
  const at::Tensor kh = k.transpose(1, 2).repeat_interleave(nH / nKV, 1);
  const at::Tensor vh = v.transpose(1, 2).repeat_interleave(nH / nKV, 1);
  const at::Tensor m = allowed.unsqueeze(1);  // [B, 1, T, T]
  const at::Tensor s = at::matmul(qh, kh.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
  const at::Tensor p = at::softmax(s.masked_fill(m.logical_not(), -1e30), -1) * m.to(s.scalar_type());
  return at::matmul(p, vh).transpose(1, 2);
}

}  // namespace

TEST(Ops, AttentionMaskIsCausalWithinSegments) {
  const at::Tensor seg = at::tensor({0, 0, 1, 1, 1, -1}, at::kLong).view({1, 6});
  const at::Tensor m = ops::attention_mask(seg, 6, at::kCPU)[0];
  const int expect[6][6] = {{1, 0, 0, 0, 0, 0}, {1, 1, 0, 0, 0, 0}, {0, 0, 1, 0, 0, 0},
                            {0, 0, 1, 1, 0, 0}, {0, 0, 1, 1, 1, 0}, {0, 0, 0, 0, 0, 0}};
  for (int i = 0; i < 6; ++i)
    for (int j = 0; j < 6; ++j) EXPECT_EQ(m[i][j].item<bool>(), expect[i][j] == 1) << i << "," << j;
  // An id reused after another sample starts a new sample.
  const at::Tensor reuse = at::tensor({0, 0, 1, 0}, at::kLong).view({1, 4});
  const at::Tensor r = ops::attention_mask(reuse, 4, at::kCPU)[0];
  EXPECT_FALSE(r[3][0].item<bool>());
  EXPECT_TRUE(r[3][3].item<bool>());
  EXPECT_TRUE(r[1][0].item<bool>());
}

TEST(Ops, AttentionMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const int64_t B = 2, T = 9, D = 6;
  // Row 0: one causal sequence; row 1: three packed segments and trailing padding.
  const at::Tensor seg = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                                     0, 0, 0, 1, 1, 2, 2, -1, -1},
                                    at::kLong)
                             .view({B, T});
  for (const auto [nH, nKV] : std::vector<std::pair<int64_t, int64_t>>{{3, 3}, {4, 2}, {8, 2}}) {
    for (const bool packed : {false, true}) {
      SCOPED_TRACE(testing::Message() << "nH=" << nH << " nKV=" << nKV << " packed=" << packed);
      const at::Tensor mask = ops::attention_mask(packed ? seg : at::Tensor(), T, at::kCPU);
      at::Tensor q = leaf(randn({B, T, nH, D}, gen)), k = leaf(randn({B, T, nKV, D}, gen)),
                 v = leaf(randn({B, T, nKV, D}, gen));
      const at::Tensor allowed = mask.expand({B, T, T});
      const at::Tensor ref = ref_attention(q, k, v, allowed);
      at::Tensor lse;
      const at::Tensor out = ops::attention_forward(q.detach(), k.detach(), v.detach(), mask, &lse);
      QFT_EXPECT_CLOSE(out, ref.detach(), "attention_out");
      EXPECT_FALSE(out.isnan().any().item<bool>());
      const at::Tensor dout = randn({B, T, nH, D}, gen);
      const auto g = autograd((ref * dout).sum(), {q, k, v});
      const auto mine = ops::attention_backward(dout, q.detach(), k.detach(), v.detach(), out, lse, mask);
      QFT_EXPECT_CLOSE(mine.dq, g[0], "attention_dq");
      QFT_EXPECT_CLOSE(mine.dk, g[1], "attention_dk");
      QFT_EXPECT_CLOSE(mine.dv, g[2], "attention_dv");
      EXPECT_FALSE(mine.dq.isnan().any().item<bool>());
      if (packed) {
        // Padding rows output exactly zero and pass no gradient.
        EXPECT_EQ(out[1].slice(0, 7).abs().max().item<double>(), 0.0);
        EXPECT_EQ(mine.dk[1].slice(0, 7).abs().max().item<double>(), 0.0);
        EXPECT_EQ(mine.dv[1].slice(0, 7).abs().max().item<double>(), 0.0);
      }
    }
  }
}

TEST(Ops, SwigluMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(5);
  at::Tensor g = leaf(randn({6, 11}, gen, 2.0)), u = leaf(randn({6, 11}, gen));
  const at::Tensor ref = g * at::sigmoid(g) * u;
  QFT_EXPECT_CLOSE(ops::swiglu_forward(g.detach(), u.detach()), ref.detach(), "swiglu_y");
  const at::Tensor dh = randn({6, 11}, gen);
  const auto grads = autograd((ref * dh).sum(), {g, u});
  const auto [dg, du] = ops::swiglu_backward(dh, g.detach(), u.detach());
  QFT_EXPECT_CLOSE(dg, grads[0], "swiglu_dgate");
  QFT_EXPECT_CLOSE(du, grads[1], "swiglu_dup");
}

TEST(Ops, LinearFrozenAndFullMatchAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(6);
  at::Tensor x = leaf(randn({7, 5}, gen)), W = leaf(randn({4, 5}, gen));
  const at::Tensor ref = at::matmul(x, W.t());
  const Linear linear = Linear::dense(Projection::q, W.detach());
  QFT_EXPECT_CLOSE(ops::linear_forward(linear, x.detach(), nullptr), ref.detach(), "linear_y");
  const at::Tensor dy = randn({7, 4}, gen);
  const auto g = autograd((ref * dy).sum(), {x, W});
  // Frozen: dx only.
  ops::LinearGrads frozen;
  QFT_EXPECT_CLOSE(ops::linear_backward(linear, dy, x.detach(), at::Tensor(), frozen), g[0], "linear_dx");
  // Full fine-tune: dW accumulates onto what is there.
  at::Tensor dW = at::ones({4, 5}, f64);
  ops::LinearGrads full;
  full.dW = &dW;
  ops::linear_backward(linear, dy, x.detach(), at::Tensor(), full);
  QFT_EXPECT_CLOSE(dW - 1.0, g[1], "linear_dW");
}

TEST(Ops, LinearLoraMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  const int64_t N = 9, in = 6, out = 5, r = 3;
  for (const double dropout : {0.0, 0.3}) {
    for (const bool rslora : {false, true}) {
      SCOPED_TRACE(testing::Message() << "dropout=" << dropout << " rslora=" << rslora);
      at::Tensor x = leaf(randn({N, in}, gen)), W = leaf(randn({out, in}, gen));
      at::Tensor A = leaf(randn({r, in}, gen)), B = leaf(randn({out, r}, gen));
      Linear linear = Linear::dense(Projection::up, W.detach());
      LoraBranch lora;
      lora.A = A.detach();
      lora.B = B.detach();
      lora.scaling = rslora ? 16.0 / std::sqrt(3.0) : 16.0 / 3.0;
      lora.dropout = dropout;
      lora.dropout_seed = ops::dropout_seed_for(42, 1, 2);
      // Reference dropout: the op's mask (a function of the seed), applied as nn.Dropout does.
      at::Tensor xd = x;
      if (dropout > 0) {
        const at::Tensor keep = ops::dropout_keep_mask({N, in}, dropout, lora.dropout_seed, at::kDouble, at::kCPU);
        const double kept = keep.mean().item<double>();
        EXPECT_GT(kept, 0.4);
        EXPECT_LT(kept, 0.95);
        xd = x * keep / (1.0 - dropout);
      }
      const at::Tensor ref = at::matmul(x, W.t()) + lora.scaling * at::matmul(at::matmul(xd, A.t()), B.t());
      at::Tensor xa;
      linear.lora = lora;
      const at::Tensor y = ops::linear_forward(linear, x.detach(), &xa);
      QFT_EXPECT_CLOSE(y, ref.detach(), "lora_y");
      const at::Tensor dy = randn({N, out}, gen);
      const auto g = autograd((ref * dy).sum(), {x, W, A, B});
      at::Tensor dA = at::zeros_like(lora.A), dB = at::zeros_like(lora.B), dW = at::zeros({out, in}, f64);
      ops::LinearGrads grads;
      grads.dA = &dA;
      grads.dB = &dB;
      const at::Tensor dx = ops::linear_backward(linear, dy, x.detach(), xa, grads);
      QFT_EXPECT_CLOSE(dx, g[0], "lora_dx");
      QFT_EXPECT_CLOSE(dA, g[2], "lora_dA");
      QFT_EXPECT_CLOSE(dB, g[3], "lora_dB");
      // LoRA and a trained base weight together.
      grads.dW = &dW;
      dA.zero_();
      dB.zero_();
      ops::linear_backward(linear, dy, x.detach(), xa, grads);
      QFT_EXPECT_CLOSE(dW, g[1], "lora_full_dW");
      QFT_EXPECT_CLOSE(dA, g[2], "lora_full_dA");
    }
  }
}

TEST(Ops, LoraMastersStayFp32WithLowPrecisionActivations) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor x = randn({4, 8}, gen).to(at::kBFloat16), W = randn({6, 8}, gen).to(at::kBFloat16);
  Linear linear = Linear::dense(Projection::o, W);
  LoraBranch lora;
  lora.A = randn({2, 8}, gen).to(at::kFloat);
  lora.B = randn({6, 2}, gen).to(at::kFloat);
  linear.lora = lora;
  at::Tensor xa;
  const at::Tensor y = ops::linear_forward(linear, x, &xa);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  at::Tensor dA = at::zeros_like(lora.A), dB = at::zeros_like(lora.B);
  ops::LinearGrads grads;
  grads.dA = &dA;
  grads.dB = &dB;
  const at::Tensor dx = ops::linear_backward(linear, at::ones_like(y), x, xa, grads);
  EXPECT_EQ(dx.scalar_type(), at::kBFloat16);
  EXPECT_EQ(dA.scalar_type(), at::kFloat);
  EXPECT_GT(dB.abs().sum().item<float>(), 0.0f);
}

TEST(Ops, DropoutMaskIsAPureFunctionOfTheSeed) {
  const at::Tensor a = ops::dropout_keep_mask({50, 40}, 0.25, 123, at::kFloat, at::kCPU);
  const at::Tensor b = ops::dropout_keep_mask({50, 40}, 0.25, 123, at::kFloat, at::kCPU);
  const at::Tensor c = ops::dropout_keep_mask({50, 40}, 0.25, 124, at::kFloat, at::kCPU);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  EXPECT_NEAR(a.mean().item<float>(), 0.75, 0.05);
  EXPECT_NE(ops::dropout_seed_for(1, 0, 1), ops::dropout_seed_for(1, 1, 0));
}

TEST(Ops, EmbeddingMatchesAutograd) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(9);
  at::Tensor W = leaf(randn({11, 4}, gen));
  const at::Tensor ids = at::tensor({3, 7, 3, 0, 10, 3}, at::kLong).view({2, 3});
  const at::Tensor ref = W.index_select(0, ids.reshape(-1));
  QFT_EXPECT_CLOSE(ops::embedding_forward(W.detach(), ids), ref.detach(), "embedding_y");
  const at::Tensor dy = randn({6, 4}, gen);
  const auto g = autograd((ref * dy).sum(), {W});
  at::Tensor dW = at::zeros({11, 4}, f64);
  ops::embedding_backward(dy, ids, dW);
  QFT_EXPECT_CLOSE(dW, g[0], "embedding_dW");
}

TEST(Ops, ShiftTargetsFollowsTransformersAndSegments) {
  const at::Tensor labels = at::tensor({5, 6, 7, 8, 9, -100, 4, 3}, at::kLong).view({1, 8});
  const at::Tensor plain = ops::shift_targets(labels, at::Tensor());
  EXPECT_TRUE(at::equal(plain, at::tensor({6, 7, 8, 9, -100, 4, 3, -100}, at::kLong)));
  // Segments [0 0 0 1 1 1 -1 -1]: the last token of segment 0 does not predict segment 1's first.
  const at::Tensor seg = at::tensor({0, 0, 0, 1, 1, 1, -1, -1}, at::kLong).view({1, 8});
  const at::Tensor packed = ops::shift_targets(labels, seg);
  EXPECT_TRUE(at::equal(packed, at::tensor({6, 7, -100, 9, -100, -100, -100, -100}, at::kLong)));
}

TEST(Ops, CrossEntropyMatchesAutogradInEveryChunking) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(10);
  const int64_t N = 13, H = 6, V = 97;
  at::Tensor h = leaf(randn({N, H}, gen)), W = leaf(randn({V, H}, gen));
  at::Tensor targets = at::randint(0, V, {N}, gen, at::TensorOptions().dtype(at::kLong));
  targets.index_put_({at::tensor({0, 4, 5, 12}, at::kLong)}, -100);
  const double denominator = 7.5;
  const at::Tensor valid = targets != -100;
  const at::Tensor logp = at::log_softmax(at::matmul(h, W.t()), -1);
  const at::Tensor nll = -logp.gather(1, targets.clamp_min(0).unsqueeze(1)).squeeze(1) * valid.to(at::kDouble);
  const at::Tensor ref_sum = nll.sum();
  const auto g = autograd(ref_sum / denominator, {h, W});
  for (const int64_t chunk : {1, 3, 4, 1000}) {
    SCOPED_TRACE(chunk);
    at::Tensor dh, dW = at::zeros({V, H}, f64);
    const auto r = ops::lm_head_cross_entropy(h.detach(), W.detach(), targets, chunk, denominator, &dh, &dW);
    EXPECT_EQ(r.target_tokens, 9);
    EXPECT_NEAR(r.loss_sum, ref_sum.item<double>(), 1e-10 * ref_sum.item<double>());
    QFT_EXPECT_CLOSE(dh, g[0], "ce_dh");
    QFT_EXPECT_CLOSE(dW, g[1], "ce_dW");
    // Loss only.
    const auto lo = ops::lm_head_cross_entropy(h.detach(), W.detach(), targets, chunk, 1.0, nullptr, nullptr);
    EXPECT_EQ(lo.loss_sum, r.loss_sum);
  }
  // Labels outside the vocabulary are an error, not a crash.
  at::Tensor bad = targets.clone();
  bad[1] = V;
  EXPECT_THROW(ops::lm_head_cross_entropy(h.detach(), W.detach(), bad, 4, 1.0, nullptr, nullptr), qft::Error);
}

