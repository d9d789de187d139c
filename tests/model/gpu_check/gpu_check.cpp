// Throwaway GPU check of the model core: cross-device agreement and bf16 step timing.
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "model/qwen3_model.h"
#include "model/ops/attention.h"
#include "model/ops/cross_entropy.h"
#include "model/ops/linear.h"
#include "model/ops/rms_norm.h"
#include "model/ops/rope.h"
#include "model/ops/swiglu.h"

using namespace qft::model;

static double rel(const at::Tensor& a, const at::Tensor& b) {
  auto ad = a.to(at::kCPU, at::kDouble), bd = b.to(at::kCPU, at::kDouble);
  double s = bd.abs().max().item<double>();
  return (ad - bd).abs().max().item<double>() / (s > 0 ? s : 1);
}

static Qwen3Config cfg(int64_t V, int64_t H, int64_t I, int64_t L, int64_t nH, int64_t nKV, int64_t D, bool tied) {
  return Qwen3Config::from_json({{"vocab_size", V}, {"hidden_size", H}, {"intermediate_size", I},
                                 {"num_hidden_layers", L}, {"num_attention_heads", nH},
                                 {"num_key_value_heads", nKV}, {"head_dim", D}, {"rope_theta", 1e6},
                                 {"tie_word_embeddings", tied}}, "gpu");
}

static Qwen3Weights gpu_weights(const Qwen3Config& c, at::ScalarType dt) {
  auto o = at::TensorOptions().dtype(dt).device(at::kCUDA);
  auto rn = [&](std::vector<int64_t> s) { return at::randn(s, o).mul_(0.02); };
  Qwen3Weights w;
  w.embed_tokens = rn({c.vocab_size, c.hidden_size});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LayerWeights l;
    l.input_layernorm = at::ones({c.hidden_size}, o);
    l.post_attention_layernorm = at::ones({c.hidden_size}, o);
    l.q_norm = at::ones({c.head_dim}, o);
    l.k_norm = at::ones({c.head_dim}, o);
    for (const ProjectionInfo& info : projection_table()) {
      const auto [out, in] = projection_shape(c, info.projection);
      l[info.projection] = Linear::dense(info.projection, rn({out, in}));
    }
    w.layers.push_back(l);
  }
  w.norm = at::ones({c.hidden_size}, o);
  w.lm_head = c.tie_word_embeddings ? w.embed_tokens : rn({c.vocab_size, c.hidden_size});
  return w;
}

static LoraConfig all_targets(int64_t r, double dropout) {
  LoraConfig lc;
  lc.r = r;
  lc.lora_alpha = 2.0 * r;
  lc.lora_dropout = dropout;
  lc.target_modules = {Projection::q, Projection::k, Projection::v, Projection::o, Projection::gate, Projection::up,
                       Projection::down};
  return lc;
}

static Batch packed_batch(int64_t B, int64_t T, int64_t V, at::Device dev) {
  Batch b;
  b.input_ids = at::randint(0, V, {B, T}, at::TensorOptions().dtype(at::kLong));
  b.labels = b.input_ids.clone();
  b.segment_ids = at::zeros({B, T}, at::kLong);
  b.position_ids = at::arange(T, at::kLong).expand({B, T}).contiguous();
  // second half of each row: another sample, last 3 tokens padding
  b.segment_ids.slice(1, T / 2).fill_(1);
  b.segment_ids.slice(1, T - 3).fill_(-1);
  b.position_ids.slice(1, T / 2).sub_(T / 2);
  b.labels.slice(1, T - 3).fill_(-100);
  b.input_ids = b.input_ids.to(dev);
  b.labels = b.labels.to(dev);
  b.segment_ids = b.segment_ids.to(dev);
  b.position_ids = b.position_ids.to(dev);
  return b;
}

static void cross_device() {
  auto c = cfg(97, 64, 96, 2, 4, 2, 24, false);
  auto w = Qwen3Weights::random(c, 1, 0.1, at::kDouble);
  auto lora = LoraWeights::init(c, all_targets(4, 0.0), 2);
  for (auto& l : lora.layers) for (auto& p : l) if (p.defined()) { p.A = p.A.to(at::kDouble); p.B = at::randn_like(p.B).to(at::kDouble) * 0.1; }
  Batch bc = packed_batch(2, 33, 97, at::kCPU);
  Batch bg = bc; bg.input_ids = bc.input_ids.cuda(); bg.labels = bc.labels.cuda(); bg.segment_ids = bc.segment_ids.cuda(); bg.position_ids = bc.position_ids.cuda();
  LoraWeights lg = lora; for (auto& l : lg.layers) for (auto& p : l) if (p.defined()) { p.A = p.A.cuda(); p.B = p.B.cuda(); }
  Qwen3Model mc(c, w), mg(c, w.to(at::kDouble, at::kCUDA));
  Gradients gc, gg; gc.lora = lora.zeros_like(); gg.lora = lg.zeros_like(); gc.weights = w.zeros_like(); gg.weights = mg.weights().zeros_like();
  StepOptions o; o.loss_denominator = 50;
  auto rc = mc.forward_backward(bc, &lora, gc, o);
  auto rg = mg.forward_backward(bg, &lg, gg, o);
  double e = 0;
  auto a = gc.lora->named_tensors(), b = gg.lora->named_tensors();
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, rel(b[i].second, a[i].second));
  auto wa = gc.weights->named_tensors(c), wb = gg.weights->named_tensors(c);
  for (size_t i = 0; i < wa.size(); ++i) e = std::max(e, rel(wb[i].second, wa[i].second));
  std::printf("cross-device float64: loss cpu %.15f cuda %.15f, max grad rel err %.3e\n", rc.loss_sum, rg.loss_sum, e);
  // dropout on CUDA: checkpointing recomputes identical masks
  LoraWeights ld = lg; ld.config.lora_dropout = 0.2;
  Gradients g1, g2; g1.lora = ld.zeros_like(); g2.lora = ld.zeros_like();
  StepOptions od; od.dropout_seed = 7;
  auto r1 = mg.forward_backward(bg, &ld, g1, od);
  od.gradient_checkpointing = true;
  auto r2 = mg.forward_backward(bg, &ld, g2, od);
  bool same = r1.loss_sum == r2.loss_sum;
  auto x1 = g1.lora->named_tensors(), x2 = g2.lora->named_tensors();
  for (size_t i = 0; i < x1.size(); ++i) same = same && at::equal(x1[i].second, x2[i].second);
  std::printf("cuda dropout + checkpointing identical: %s (loss %.6f vs no-dropout %.6f)\n", same ? "yes" : "NO", r1.loss_sum, rg.loss_sum);
}

static void flash_vs_math() {
  for (auto dt : {at::kBFloat16, at::kHalf}) {
    auto c = cfg(1000, 256, 512, 2, 8, 2, 64, false);
    auto w32 = Qwen3Weights::random(c, 1, 0.05, at::kFloat).to(at::kFloat, at::kCUDA);
    auto w = w32.to(dt, at::kCUDA);
    auto lora = LoraWeights::init(c, all_targets(8, 0.0), 2, at::kCUDA);
    for (auto& l : lora.layers) for (auto& p : l) if (p.defined()) p.B.normal_(0, 0.05);
    Batch b = packed_batch(3, 300, 1000, at::kCUDA);
    // fp32 reference on the same (rounded) weights: the math path, the truth both low-precision paths approximate
    Qwen3Model m(c, w), m32(c, w.to(at::kFloat, at::kCUDA));
    auto run = [&](Qwen3Model& model, bool flash) {
      Gradients g; g.lora = lora.zeros_like(); g.weights = model.weights().zeros_like(at::kFloat);
      StepOptions o; o.loss_denominator = 800; o.flash_attention = flash;
      auto r = model.forward_backward(b, &lora, g, o);
      return std::make_pair(r, g);
    };
    auto [rf, gf] = run(m, true);
    auto [rm, gm] = run(m, false);
    auto [r32, g32] = run(m32, false);
    auto err = [&](Gradients& g) {
      double e = 0, ew = 0;
      auto a = g.lora->named_tensors(), bb = g32.lora->named_tensors();
      for (size_t i = 0; i < a.size(); ++i) e = std::max(e, rel(a[i].second, bb[i].second));
      auto wa = g.weights->named_tensors(c), wb = g32.weights->named_tensors(c);
      for (size_t i = 0; i < wa.size(); ++i) ew = std::max(ew, rel(wa[i].second, wb[i].second));
      return std::make_pair(e, ew);
    };
    auto [ef, efw] = err(gf);
    auto [em, emw] = err(gm);
    std::printf("%s vs fp32 model (packed+padding): loss flash %.4f math %.4f fp32 %.4f | lora grad rel flash %.2e math %.2e | weight grad rel flash %.2e math %.2e\n",
                dt == at::kHalf ? "fp16" : "bf16", rf.loss_sum, rm.loss_sum, r32.loss_sum, ef, em, efw, emw);
  }
}

template <typename F>
static double timeit(F&& f, int reps = 5) {
  f();
  c10::cuda::device_synchronize();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  c10::cuda::device_synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps * 1e3;
}

// Attention accuracy: flash(bf16) and math(bf16) against math(fp32) on the same bf16-rounded inputs.
static void attention_accuracy() {
  const int64_t B = 2, T = 512, nH = 8, nKV = 2, D = 128;
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor q = at::randn({B, T, nH, D}, o), k = at::randn({B, T, nKV, D}, o), v = at::randn({B, T, nKV, D}, o);
  at::Tensor dout = at::randn({B, T, nH, D}, o);
  at::Tensor seg = at::zeros({B, T}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA));
  seg.slice(1, 200).fill_(1);
  seg.slice(1, 450).fill_(-1);
  auto l32 = ops::attention_layout(seg, B, T, D, at::kCUDA, at::kFloat);
  auto lbm = ops::attention_layout(seg, B, T, D, at::kCUDA, at::kBFloat16, false);
  auto lbf = ops::attention_layout(seg, B, T, D, at::kCUDA, at::kBFloat16, true);
  at::Tensor lse32, lsem, lsef;
  auto f = [](const at::Tensor& t) { return t.to(at::kFloat); };
  at::Tensor o32 = ops::attention_forward(f(q), f(k), f(v), l32, &lse32);
  at::Tensor om = ops::attention_forward(q, k, v, lbm, &lsem);
  at::Tensor of = ops::attention_forward(q, k, v, lbf, &lsef);
  auto g32 = ops::attention_backward(f(dout), f(q), f(k), f(v), o32, lse32, l32);
  auto gm = ops::attention_backward(dout, q, k, v, om, lsem, lbm);
  auto gf = ops::attention_backward(dout, q, k, v, of, lsef, lbf);
  // padding rows (450..511) differ by design (flash lets pads attend to pads): compare real rows only
  auto real = [](const at::Tensor& t) { return t.slice(1, 0, 450); };
  std::printf("attention bf16 vs fp32 (rel max): out math %.2e flash %.2e | dq math %.2e flash %.2e | dk math %.2e flash %.2e | dv math %.2e flash %.2e\n",
              rel(real(om), real(o32)), rel(real(of), real(o32)), rel(real(gm.dq), real(g32.dq)), rel(real(gf.dq), real(g32.dq)),
              rel(real(gm.dk), real(g32.dk)), rel(real(gf.dk), real(g32.dk)), rel(real(gm.dv), real(g32.dv)), rel(real(gf.dv), real(g32.dv)));
}

// Per-op times at Qwen3-0.6B shapes (one layer, N = 16384 tokens, bf16), milliseconds.
static void op_times() {
  const int64_t N = 16384, H = 1024, I = 3072, nH = 16, nKV = 8, D = 128, B = 8, T = 2048, r = 16;
  auto o = at::TensorOptions().device(at::kCUDA).dtype(at::kBFloat16);
  at::Tensor x = at::randn({N, H}, o), w = at::ones({H}, o), rstd;
  std::printf("ms per call at 0.6B shapes (N=%ld):\n", N);
  ops::rms_norm_forward(x, w, 1e-6, &rstd);
  { double f1 = timeit([&] { ops::rms_norm_forward(x, w, 1e-6, &rstd); });
    double b1 = timeit([&] { ops::rms_norm_backward(x, x, w, rstd, nullptr); });
    std::printf("  rms_norm fwd %.3f bwd %.3f\n", f1, b1); }
  at::Tensor q = at::randn({N, nH, D}, o);
  auto [cos, sin] = ops::rope_tables(at::arange(T, at::TensorOptions().dtype(at::kLong).device(at::kCUDA)).repeat({B}), D, 1e6, at::kBFloat16);
  { double t1 = timeit([&] { ops::rope_forward(q, cos, sin); }); double t2 = timeit([&] { ops::rope_backward(q, cos, sin); });
    double t3 = timeit([&] { ops::rms_norm_forward(q, at::ones({D}, o), 1e-6, &rstd); });
    std::printf("  rope(q) fwd %.3f bwd %.3f; q_norm fwd %.3f\n", t1, t2, t3); }
  at::Tensor W = at::randn({I, H}, o) * 0.02;
  ops::LoraBranch lb; lb.A = at::randn({r, H}, o.dtype(at::kFloat)) * 0.01; lb.B = at::randn({I, r}, o.dtype(at::kFloat)) * 0.01; lb.scaling = 2;
  at::Tensor xa, dy = at::randn({N, I}, o);
  at::Tensor dA = at::zeros_like(lb.A), dB = at::zeros_like(lb.B);
  ops::LinearGrads lg; lg.dA = &dA; lg.dB = &dB;
  { double t1 = timeit([&] { ops::linear_forward(x, W, nullptr, nullptr); }); double t2 = timeit([&] { ops::linear_forward(x, W, &lb, &xa); });
    double t3 = timeit([&] { ops::linear_backward(dy, x, W, nullptr, at::Tensor(), {}); });
    double t4 = timeit([&] { ops::linear_backward(dy, x, W, &lb, xa, lg); });
    std::printf("  gate_proj base fwd %.3f, +lora fwd %.3f, base bwd(dx) %.3f, +lora bwd %.3f\n", t1, t2, t3, t4); }
  lb.dropout = 0.05; lb.dropout_seed = 3;
  { double t1 = timeit([&] { ops::linear_forward(x, W, &lb, &xa); }); double t2 = timeit([&] { ops::linear_backward(dy, x, W, &lb, xa, lg); });
    std::printf("  gate_proj +lora dropout 0.05 fwd %.3f bwd %.3f\n", t1, t2); }
  at::Tensor g = at::randn({N, I}, o), u = at::randn({N, I}, o);
  { double t1 = timeit([&] { ops::swiglu_forward(g, u); }); double t2 = timeit([&] { ops::swiglu_backward(g, g, u); });
    std::printf("  swiglu fwd %.3f bwd %.3f\n", t1, t2); }
  at::Tensor k = at::randn({B, T, nKV, D}, o), v = at::randn({B, T, nKV, D}, o), qq = q.view({B, T, nH, D}), lse;
  auto lay = ops::attention_layout(at::Tensor(), B, T, D, at::kCUDA, at::kBFloat16);
  at::Tensor out = ops::attention_forward(qq, k, v, lay, &lse);
  { double t1 = timeit([&] { ops::attention_forward(qq, k, v, lay, &lse); });
    double t2 = timeit([&] { ops::attention_backward(qq, qq, k, v, out, lse, lay); });
    double t3 = timeit([&] { ops::attention_layout(at::Tensor(), B, T, D, at::kCUDA, at::kBFloat16); });
    std::printf("  flash attention fwd %.3f bwd %.3f; layout %.3f\n", t1, t2, t3); }
  at::Tensor E = at::randn({151936, H}, o) * 0.02, tg = at::randint(0, 151936, {N}, at::TensorOptions().dtype(at::kLong).device(at::kCUDA)), dh;
  { double t1 = timeit([&] { ops::lm_head_cross_entropy(x, E, tg, 1024, 1.0, nullptr, nullptr); }, 2);
    double t2 = timeit([&] { ops::lm_head_cross_entropy(x, E, tg, 1024, 1.0, &dh, nullptr); }, 2);
    double t3 = timeit([&] { ops::lm_head_cross_entropy(x, E, tg, 4096, 1.0, &dh, nullptr); }, 2);
    std::printf("  lm_head+CE (V=151936, chunk 1024) loss only %.3f, with dh %.3f; chunk 4096 with dh %.3f\n", t1, t2, t3); }
}

static void bench(const char* name, Qwen3Config c, int64_t B, int64_t T, bool ckpt, int steps, bool flash = true, bool full = false) {
  c10::cuda::CUDACachingAllocator::emptyCache();
  auto w = gpu_weights(c, at::kBFloat16);
  auto lora = LoraWeights::init(c, all_targets(16, 0.0), 3, at::kCUDA);
  Qwen3Model m(c, std::move(w));
  Gradients g; if (full) g.weights = m.weights().zeros_like(at::kFloat); else g.lora = lora.zeros_like();
  Batch b = packed_batch(B, T, c.vocab_size, at::kCUDA);
  b.segment_ids = at::Tensor();  // plain causal rows as the peer runs
  b.position_ids = at::arange(T, at::TensorOptions().dtype(at::kLong).device(at::kCUDA)).expand({B, T}).contiguous();
  b.labels = b.input_ids.clone();
  StepOptions o; o.gradient_checkpointing = ckpt; o.loss_denominator = B * (T - 1); o.flash_attention = flash;
  c10::cuda::CUDACachingAllocator::resetPeakStats(0);
  std::vector<double> times;
  double loss = 0;
  for (int s = 0; s < steps + 2; ++s) {
    c10::cuda::device_synchronize();
    auto t0 = std::chrono::steady_clock::now();
    auto r = m.forward_backward(b, full ? nullptr : &lora, g, o);
    c10::cuda::device_synchronize();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= 2) times.push_back(dt);
    loss = r.loss_sum / r.target_tokens;
  }
  std::sort(times.begin(), times.end());
  double med = times[times.size() / 2];
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(0);
  double peak = stats.allocated_bytes[0].peak / 1073741824.0;
  std::printf("%-5s full %d flash %d seq %5ld mb %ld ckpt %d: step %.3f s, %8.0f tok/s, peak %.1f GiB, loss %.4f\n", name, full, flash, T, B, ckpt, med,
              B * T / med, peak, loss);
}

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "all";
  if (what == "all" || what == "check") { cross_device(); flash_vs_math(); attention_accuracy(); }
  if (what == "ops") op_times();
  if (what == "all" || what == "bench") {
    auto q06 = cfg(151936, 1024, 3072, 28, 16, 8, 128, true);
    auto q8 = cfg(151936, 4096, 12288, 36, 32, 8, 128, false);
    bench("0.6B", q06, 8, 2048, true, 4);
    bench("0.6B", q06, 8, 2048, true, 4, true, true);
    bench("8B", q8, 4, 2048, true, 3);
    bench("8B", q8, 2, 2048, false, 3);
  }
  return 0;
}
