// Every op's explicit backward against autograd on random float64 inputs.
#include <cmath>
#include <string>

#include "model/ops/attention.h"
#include "model/ops/cross_entropy.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/lora_group.h"
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

// The branch computes in the activations' dtype from factors cast once per step (LoraCompute); the
// gradients still accumulate in the fp32 buffers of the masters. Factors of another dtype are an error,
// not a cast on every call.
TEST(Ops, LoraGradientsStayFp32WithLowPrecisionActivations) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(8);
  const at::Tensor x = randn({4, 8}, gen).to(at::kBFloat16), W = randn({6, 8}, gen).to(at::kBFloat16);
  const at::Tensor A_master = randn({2, 8}, gen).to(at::kFloat), B_master = randn({6, 2}, gen).to(at::kFloat);
  Linear linear = Linear::dense(Projection::o, W);
  LoraBranch lora;
  lora.A = A_master;
  lora.B = B_master;
  linear.lora = lora;
  at::Tensor xa;
  std::string error;
  try {
    ops::linear_forward(linear, x, &xa);
  } catch (const qft::Error& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("o_proj: LoRA factors A Float / B Float with BFloat16 activations"), std::string::npos)
      << error;
  linear.lora->A = A_master.to(at::kBFloat16);
  linear.lora->B = B_master.to(at::kBFloat16);
  const at::Tensor y = ops::linear_forward(linear, x, &xa);
  EXPECT_EQ(y.scalar_type(), at::kBFloat16);
  at::Tensor dA = at::zeros_like(A_master), dB = at::zeros_like(B_master);
  ops::LinearGrads grads;
  grads.dA = &dA;
  grads.dB = &dB;
  const at::Tensor dx = ops::linear_backward(linear, at::ones_like(y), x, xa, grads);
  EXPECT_EQ(dx.scalar_type(), at::kBFloat16);
  EXPECT_EQ(dA.scalar_type(), at::kFloat);
  EXPECT_EQ(dB.scalar_type(), at::kFloat);
  EXPECT_GT(dB.abs().sum().item<float>(), 0.0f);
}

namespace {

// Three projections of one 16-wide input (outputs 12, 8, 8; ranks 4, 2, 3), each with a LoRA branch or
// not, in `dt` with fp32 masters; the adapted members' A are row blocks of one stacked tensor, as
// LoraCompute makes them.
struct SharedInput {
  std::array<Linear, 3> linears;
  at::Tensor stacked_A;
  std::array<at::Tensor, 3> A_master, B_master;

  SharedInput(at::Generator& gen, at::ScalarType dt, std::array<bool, 3> adapted, double dropout) {
    const int64_t in = 16;
    const std::array<int64_t, 3> out = {12, 8, 8}, rank = {4, 2, 3};
    std::vector<at::Tensor> parts;
    for (int i = 0; i < 3; ++i) {
      linears[i] = Linear::dense(static_cast<Projection>(i), randn({out[i], in}, gen, 0.3).to(dt));
      if (!adapted[i]) continue;
      A_master[i] = randn({rank[i], in}, gen, 0.3).to(at::kFloat);
      B_master[i] = randn({out[i], rank[i]}, gen, 0.3).to(at::kFloat);
      parts.push_back(A_master[i]);
    }
    if (!parts.empty()) stacked_A = at::cat(parts).to(dt);
    int64_t row = 0;
    for (int i = 0; i < 3; ++i) {
      if (!adapted[i]) continue;
      LoraBranch lora;
      lora.A = stacked_A.narrow(0, row, rank[i]);
      lora.B = B_master[i].to(dt);
      lora.scaling = 8.0 / static_cast<double>(rank[i]);
      lora.dropout = dropout;
      lora.dropout_seed = ops::dropout_seed_for(5, 0, i);
      linears[i].lora = lora;
      row += rank[i];
    }
  }
  ops::LinearGroup group(bool stacked) const {
    ops::LinearGroup g;
    for (const Linear& l : linears) g.members.push_back(&l);
    if (stacked) g.stacked_A = stacked_A;
    return g;
  }
};

// Outputs and gradients of one backward.
struct GroupResult {
  std::vector<at::Tensor> y, xa;
  at::Tensor dx;
  std::array<at::Tensor, 3> dA, dB, dW;
};

}  // namespace

// ops::lora_group_forward/backward against ops::linear_forward/backward run on each member with the sum
// of their input gradients (the per-projection way): fp32 within 1e-6 relative, bf16 within its
// rounding; the same ops (bitwise) where dropout makes the group run per projection anyway.
TEST(Ops, LoraGroupEqualsOneProjectionAtATime) {
  struct Setup {
    const char* name;
    std::array<bool, 3> adapted;
    double dropout;
    bool full;
  };
  const Setup setups[] = {{"q,k,v", {true, true, true}, 0.0, false},
                          {"q,v", {true, false, true}, 0.0, false},
                          {"k only", {false, true, false}, 0.0, false},
                          {"q,k,v with dropout", {true, true, true}, 0.3, false},
                          {"q,k,v, base trained too", {true, true, true}, 0.0, true},
                          {"no LoRA, base trained", {false, false, false}, 0.0, true}};
  const int64_t N = 10;
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16})
    for (const Setup& s : setups)
      for (const bool need_dx : {true, false}) {
        SCOPED_TRACE(testing::Message() << s.name << (dt == at::kFloat ? " fp32" : " bf16") << " need_dx=" << need_dx);
        at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(21);
        const SharedInput f(gen, dt, s.adapted, s.dropout);
        const at::Tensor x = randn({N, 16}, gen).to(dt);
        std::vector<at::Tensor> dy;
        for (const Linear& l : f.linears) dy.push_back(randn({N, l.weight->shape()[0]}, gen).to(dt));

        auto fresh = [&](GroupResult& r, std::vector<ops::LinearGrads>& grads) {
          grads.assign(3, {});
          for (int i = 0; i < 3; ++i) {
            if (s.adapted[i]) {
              r.dA[i] = at::zeros_like(f.A_master[i]);  // fp32 gradients of the fp32 masters
              r.dB[i] = at::zeros_like(f.B_master[i]);
              grads[i].dA = &r.dA[i];
              grads[i].dB = &r.dB[i];
            }
            if (s.full) {
              r.dW[i] = at::zeros(f.linears[i].weight->shape(), at::kFloat);
              grads[i].dW = &r.dW[i];
            }
            grads[i].need_dx = need_dx;
          }
        };
        // The group.
        GroupResult g;
        std::vector<ops::LinearGrads> g_grads;
        fresh(g, g_grads);
        g.xa.assign(3, at::Tensor());
        std::vector<at::Tensor*> slots = {&g.xa[0], &g.xa[1], &g.xa[2]};
        {
          qft::test::OpCounter ops_run;
          g.y = ops::lora_group_forward(f.group(true), x, &slots);
          EXPECT_EQ(ops_run.casts(), 0);  // the factors are used in the compute dtype as given
        }
        g.dx = ops::lora_group_backward(f.group(true), dy, x, g.xa, g_grads, need_dx);
        // One projection at a time.
        GroupResult r;
        std::vector<ops::LinearGrads> r_grads;
        fresh(r, r_grads);
        r.xa.assign(3, at::Tensor());
        for (int i = 0; i < 3; ++i) r.y.push_back(ops::linear_forward(f.linears[i], x, &r.xa[i]));
        for (int i = 0; i < 3; ++i) {
          const at::Tensor dx_i = ops::linear_backward(f.linears[i], dy[i], x, r.xa[i], r_grads[i]);
          if (need_dx) r.dx = r.dx.defined() ? r.dx.add_(dx_i) : dx_i;
        }

        std::vector<std::pair<std::string, std::pair<at::Tensor, at::Tensor>>> compared;
        for (int i = 0; i < 3; ++i) {
          compared.push_back({"y" + std::to_string(i), {g.y[i], r.y[i]}});
          EXPECT_EQ(g.xa[i].defined(), s.adapted[i]);
          if (s.adapted[i]) {
            compared.push_back({"xa" + std::to_string(i), {g.xa[i], r.xa[i]}});
            compared.push_back({"dA" + std::to_string(i), {g.dA[i], r.dA[i]}});
            compared.push_back({"dB" + std::to_string(i), {g.dB[i], r.dB[i]}});
            EXPECT_GT(g.dA[i].abs().max().item<double>(), 0.0);
          }
          if (s.full) compared.push_back({"dW" + std::to_string(i), {g.dW[i], r.dW[i]}});
        }
        EXPECT_EQ(g.dx.defined(), need_dx);
        if (need_dx) compared.push_back({"dx", {g.dx, r.dx}});
        const double tol = dt == at::kFloat ? 1e-6 : 1e-2;
        for (const auto& [name, t] : compared) {
          EXPECT_LE(qft::test::rel_err(t.first, t.second), tol) << name;
          if (s.dropout > 0) EXPECT_TRUE(at::equal(t.first, t.second)) << name;
        }
      }
}

// x A^T of the whole group, its A gradients and the LoRA part of its dx are one GEMM each; nothing is cast.
TEST(Ops, LoraGroupRunsOneGemmPerRankStep) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(22);
  const SharedInput f(gen, at::kBFloat16, {true, true, true}, 0.0);
  const at::Tensor x = randn({10, 16}, gen).to(at::kBFloat16);
  std::vector<at::Tensor> dy;
  for (const Linear& l : f.linears) dy.push_back(randn({10, l.weight->shape()[0]}, gen).to(at::kBFloat16));
  std::vector<at::Tensor> xa(3);
  std::vector<at::Tensor*> slots = {&xa[0], &xa[1], &xa[2]};
  std::array<at::Tensor, 3> dA, dB;
  std::vector<ops::LinearGrads> grads(3);
  for (int i = 0; i < 3; ++i) {
    dA[i] = at::zeros_like(f.A_master[i]);
    dB[i] = at::zeros_like(f.B_master[i]);
    grads[i].dA = &dA[i];
    grads[i].dB = &dB[i];
  }
  for (const bool stacked : {true, false}) {
    SCOPED_TRACE(stacked);
    {
      const qft::test::OpCounter forward;
      ops::lora_group_forward(f.group(stacked), x, &slots);
      // Stacked: x A^T once, then per member (a s) B^T and the base GEMM; else x A^T per member too.
      EXPECT_EQ(forward.gemms(), stacked ? 1 + 3 * 2 : 3 * 3);
      EXPECT_EQ(forward.casts(), 0);
    }
    const qft::test::OpCounter backward;
    ops::lora_group_backward(f.group(stacked), dy, x, xa, grads, true);
    // Stacked: per member dB and da, then dA and the LoRA dx once, then the base dx per member.
    EXPECT_EQ(backward.gemms(), stacked ? 3 * 2 + 2 + 3 : 3 * 5);
  }
}

// A stack that does not hold the members' A factors is an error, not a silent mix of two copies.
TEST(Ops, LoraGroupRejectsAStackThatIsNotTheMembersA) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(23);
  const SharedInput f(gen, at::kFloat, {true, false, true}, 0.0);
  ops::LinearGroup group = f.group(true);
  group.stacked_A = f.stacked_A.clone();
  std::string error;
  try {
    ops::lora_group_forward(group, randn({4, 16}, gen).to(at::kFloat), nullptr);
  } catch (const qft::Error& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("q_proj: its LoRA A is not rows 0.. of its group's stacked A"), std::string::npos) << error;
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
    const ops::LossTargets selected = ops::loss_targets_of_shifted(targets, V, at::kCPU);
    EXPECT_EQ(selected.count, 9);
    const auto r = ops::lm_head_cross_entropy(h.detach(), W.detach(), selected, chunk, denominator, &dh, &dW);
    EXPECT_EQ(r.target_tokens, 9);
    EXPECT_NEAR(r.loss_sum.item<double>(), ref_sum.item<double>(), 1e-10 * ref_sum.item<double>());
    QFT_EXPECT_CLOSE(dh, g[0], "ce_dh");
    QFT_EXPECT_CLOSE(dW, g[1], "ce_dW");
    // Loss only.
    const auto lo = ops::lm_head_cross_entropy(h.detach(), W.detach(), selected, chunk, 1.0, nullptr, nullptr);
    EXPECT_EQ(lo.loss_sum.item<double>(), r.loss_sum.item<double>());
  }
  // Labels outside the vocabulary are an error, not a crash; so are negative ones other than -100.
  at::Tensor bad = targets.clone();
  bad[1] = V;
  EXPECT_THROW(ops::loss_targets_of_shifted(bad, V, at::kCPU), qft::Error);
  bad[1] = -2;
  EXPECT_THROW(ops::loss_targets_of_shifted(bad, V, at::kCPU), qft::Error);
  // No target at all: a zero loss and a zero input gradient.
  at::Tensor dh;
  const auto none = ops::lm_head_cross_entropy(h.detach(), W.detach(),
                                               ops::loss_targets_of_shifted(at::full({N}, -100, at::kLong), V, at::kCPU),
                                               4, 1.0, &dh, nullptr);
  EXPECT_EQ(none.target_tokens, 0);
  EXPECT_EQ(none.loss_sum.item<double>(), 0.0);
  EXPECT_EQ(at::count_nonzero(dh).item<int64_t>(), 0);
}

