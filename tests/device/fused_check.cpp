// GPU check of the fused kernels in the model's path (issue 8): the same step with
// training.use_fused_kernels on and off, on the same inputs, must agree within the rounding of the
// compute dtype, and the fused run must really have launched the kernels. Then the pieces' speed:
// a model step on and off, and FlashAttention-2 against cuDNN's attention on packed sequences.
//   qft-fused-check            (needs a CUDA GPU; tests/device/fused_check.sh builds and runs it)
// Exit status 1 when a check fails. Prints markdown table rows (grep '^|').
#include <ATen/cuda/CUDAContext.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "model/lora.h"
#include "model/nf4_weight.h"
#include "model/ops/attention.h"
#include "model/ops/fused_kernels.h"
#include "model/qwen3_model.h"
#include "train/adamw.h"

using namespace qft;
using namespace qft::model;

namespace {

int g_failures = 0;

double rel(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kCPU, at::kDouble), bd = b.to(at::kCPU, at::kDouble);
  const double scale = bd.abs().max().item<double>();
  return (ad - bd).abs().max().item<double>() / (scale > 0 ? scale : 1.0);
}

void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++g_failures;
}

Qwen3Config config(int64_t V, int64_t H, int64_t I, int64_t L, int64_t nH, int64_t nKV, int64_t D, bool tied) {
  return Qwen3Config::from_json({{"vocab_size", V}, {"hidden_size", H}, {"intermediate_size", I},
                                 {"num_hidden_layers", L}, {"num_attention_heads", nH}, {"num_key_value_heads", nKV},
                                 {"head_dim", D}, {"rope_theta", 1e6}, {"tie_word_embeddings", tied}},
                                "fused_check");
}

// Rows of packed samples: `per_row` samples of equal length per row, labels = ids.
Batch packed_batch(int64_t B, int64_t T, int64_t per_row, int64_t V, uint64_t seed) {
  at::manual_seed(seed);
  const at::Tensor ids = at::randint(V, {B, T}, at::kLong);
  const int64_t len = T / per_row;
  const at::Tensor pos = at::arange(T, at::kLong).remainder(len).expand({B, T}).contiguous();
  const at::Tensor seg = at::arange(T, at::kLong).div(len, "floor").clamp_max(per_row - 1).expand({B, T}).contiguous();
  Batch b;
  b.input_ids = ids;
  b.labels = ids.clone();
  b.position_ids = pos;
  b.segment_ids = seg;
  return b;
}

struct StepResult {
  double loss = 0;
  std::vector<at::Tensor> grads;
};

StepResult run_step(Qwen3Model& model, const Batch& batch, const LoraWeights* lora, bool full, bool checkpointing) {
  Gradients g;
  if (lora != nullptr) g.lora = lora->zeros_like();
  if (full) g.weights = model.weights().zeros_like(at::kFloat);
  StepOptions o;
  o.gradient_checkpointing = checkpointing;
  o.loss_denominator = static_cast<double>(batch.labels.numel());
  const LossSum l = model.forward_backward(batch, lora, g, o);
  StepResult r;
  r.loss = l.loss_sum / o.loss_denominator;
  if (g.lora)
    for (auto& [name, t] : g.lora->named_tensors()) r.grads.push_back(t);
  if (g.weights)
    for (auto& [name, t] : g.weights->named_tensors(model.config())) r.grads.push_back(t);
  return r;
}

// The same step with the kernels on and off; the fused run must launch kernels, the ATen run none.
void compare_step(const std::string& name, Qwen3Model& model, const Batch& batch, const LoraWeights* lora, bool full,
                  bool checkpointing, double loss_tol, double grad_tol) {
  ops::fused::set_enabled(false);
  const int64_t before_aten = ops::fused::launches();
  const StepResult aten = run_step(model, batch, lora, full, checkpointing);
  const int64_t aten_launches = ops::fused::launches() - before_aten;
  ops::fused::set_enabled(true);
  const int64_t before = ops::fused::launches();
  const StepResult fused = run_step(model, batch, lora, full, checkpointing);
  const int64_t fused_launches = ops::fused::launches() - before;
  double worst = 0;
  for (size_t i = 0; i < aten.grads.size(); ++i) worst = std::max(worst, rel(fused.grads[i], aten.grads[i]));
  const double loss_err = std::abs(fused.loss - aten.loss) / std::abs(aten.loss);
  bool finite = std::isfinite(fused.loss);
  for (const at::Tensor& t : fused.grads) finite = finite && at::isfinite(t).all().item<bool>();
  std::printf("| %s | %lld kernels | loss %.6f vs %.6f (rel %.2e) | worst grad rel %.2e over %zu tensors |\n",
              name.c_str(), static_cast<long long>(fused_launches), fused.loss, aten.loss, loss_err, worst,
              aten.grads.size());
  expect(fused_launches > 0 && aten_launches == 0, name + ": the fused run launched kernels, the ATen run none");
  expect(finite, name + ": fused loss and gradients finite");
  expect(loss_err <= loss_tol, name + ": loss within " + std::to_string(loss_tol));
  expect(worst <= grad_tol, name + ": gradients within " + std::to_string(grad_tol));
}

void check_model_steps() {
  for (const at::ScalarType dt : {at::kFloat, at::kBFloat16}) {
    const bool bf16 = dt == at::kBFloat16;
    const Qwen3Config c = config(4096, 512, 1536, 2, 8, 4, 128, /*tied=*/true);
    Qwen3Model model(c, Qwen3Weights::random(c, 1, 0.02, dt).to(dt, at::kCUDA));
    LoraConfig lc;
    lc.r = 16;
    lc.lora_alpha = 32;
    lc.target_modules = {Projection::q, Projection::k, Projection::v, Projection::o,
                         Projection::gate, Projection::up, Projection::down};
    LoraWeights lora = LoraWeights::init(c, lc, 7, at::kCUDA);
    for (auto& layer : lora.layers)
      for (LoraPair& p : layer)
        if (p.defined()) p.B.normal_(0, 0.02);  // PEFT's zero B would leave dA zero
    const Batch batch = packed_batch(2, 512, 2, c.vocab_size, 3);
    const std::string d = bf16 ? "bf16" : "fp32";
    // fp32: the kernels compute in fp32 as ATen does, differing only in summation order.
    const double loss_tol = bf16 ? 2e-3 : 1e-6, grad_tol = bf16 ? 3e-2 : 1e-4;
    compare_step("LoRA step " + d, model, batch, &lora, false, false, loss_tol, grad_tol);
    compare_step("LoRA step " + d + ", checkpointing", model, batch, &lora, false, true, loss_tol, grad_tol);
    compare_step("full fine-tuning step " + d, model, batch, nullptr, true, false, loss_tol, grad_tol);
    if (bf16) {
      // One sequence per row: the fused run's attention is cuDNN's, the ATen run's FlashAttention-2.
      const Batch rows = packed_batch(2, 512, 1, c.vocab_size, 4);
      compare_step("LoRA step bf16, a sequence per row (cuDNN vs FA2 attention)", model, rows, &lora, false, true,
                   loss_tol, grad_tol);
    }
  }
}

void check_adamw() {
  const int64_t n = (1 << 20) + 12;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(at::kCUDA);
  at::manual_seed(5);
  const at::Tensor p0 = at::randn({n}, f32), g = at::randn({n}, f32);
  const std::vector<parallel::Range> no_decay = {{1000, 5000}, {n - 300, n}};
  at::Tensor results[2];
  for (int fused = 0; fused < 2; ++fused) {
    ops::fused::set_enabled(fused == 1);
    train::AdamW opt({0.9, 0.999, 1e-8, 0.1}, {0, n}, no_decay, at::kCUDA);
    at::Tensor p = p0.clone();
    const int64_t before = ops::fused::launches();
    for (int s = 0; s < 3; ++s) opt.step(p, g * (s + 1), 1e-3);
    if (fused == 1) expect(ops::fused::launches() - before == 3, "AdamW: three fused launches");
    results[fused] = p;
  }
  // The parameters (|p| up to ~5) carry the fp32 rounding of the last update step: a few ulps.
  const double e = rel(results[1], results[0]);
  const double moved = rel(results[0], p0);
  std::printf("| AdamW, 3 steps, %lld params, 3 decay runs | params rel diff %.2e (the steps moved them %.2e) |\n",
              static_cast<long long>(n), e, moved);
  expect(e < 1e-6 && moved > 1e-4, "AdamW: fused parameters equal the ATen ones within 1e-6");
}

void check_nf4() {
  at::manual_seed(9);
  const at::Tensor w = at::randn({1024, 4096}, at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA));
  for (const bool dq : {true, false}) {
    Nf4Options options;
    options.double_quant = dq;
    auto weight = Nf4Weight::quantize(w, options, at::kBFloat16, std::make_shared<Nf4Scratch>());
    ops::fused::set_enabled(false);
    const at::Tensor aten = weight->dense().clone();
    ops::fused::set_enabled(true);
    const int64_t before = ops::fused::launches();
    const at::Tensor fused = weight->dense().clone();
    expect(ops::fused::launches() - before == 1, std::string("NF4 dequantize launched, double_quant ") + (dq ? "on" : "off"));
    expect(at::equal(fused, aten), std::string("NF4 dequantize bit-exact, double_quant ") + (dq ? "on" : "off"));
  }
}

template <class F>
double time_ms(F&& f, int iters = 5) {
  f();
  at::cuda::getCurrentCUDAStream().synchronize();
  at::cuda::CUDAEvent start(cudaEventDefault), stop(cudaEventDefault);  // timing enabled
  start.record();
  for (int i = 0; i < iters; ++i) f();
  stop.record();
  stop.synchronize();
  return start.elapsed_time(stop) / iters;
}

// One step of a 2-layer stack at real Qwen3 shapes, kernels on and off.
void bench_steps() {
  struct Shape {
    const char* name;
    Qwen3Config c;
    int64_t B, T;
  };
  const std::vector<Shape> shapes = {
      {"0.6B-shaped, 2 layers, 8x2048 tokens", config(151936, 1024, 3072, 2, 16, 8, 128, true), 8, 2048},
      {"8B-shaped, 2 layers, 2x2048 tokens", config(151936, 4096, 12288, 2, 32, 8, 128, false), 2, 2048}};
  for (const Shape& s : shapes) {
    Qwen3Model model(s.c, Qwen3Weights::random(s.c, 1, 0.02, at::kBFloat16).to(at::kBFloat16, at::kCUDA));
    LoraConfig lc;
    lc.r = 16;
    lc.lora_alpha = 32;
    lc.target_modules = {Projection::q, Projection::k, Projection::v, Projection::o,
                         Projection::gate, Projection::up, Projection::down};
    const LoraWeights lora = LoraWeights::init(s.c, lc, 7, at::kCUDA);
    const Batch batch = packed_batch(s.B, s.T, 1, s.c.vocab_size, 3);
    double ms[2];
    for (int fused = 0; fused < 2; ++fused) {
      ops::fused::set_enabled(fused == 1);
      ms[fused] = time_ms([&] { run_step(model, batch, &lora, false, true); });
    }
    std::printf("| step, %s, recompute | ATen %.2f ms | fused %.2f ms | %.2fx |\n", s.name, ms[0], ms[1],
                ms[0] / ms[1]);
  }
  ops::fused::set_enabled(true);
}

// FlashAttention-2 (ATen's varlen entry) against cuDNN's attention on the same packed sequences.
void bench_attention() {
  const auto bf16 = at::TensorOptions().dtype(at::kBFloat16).device(at::kCUDA);
  struct Case {
    int64_t seqs, len, nH, nKV, D;
  };
  for (const Case& c : {Case{8, 2048, 16, 8, 128}, Case{2, 2048, 32, 8, 128}, Case{1, 32768, 32, 8, 128}}) {
    const int64_t N = c.seqs * c.len;
    at::manual_seed(11);
    const at::Tensor q = at::randn({N, c.nH, c.D}, bf16), k = at::randn({N, c.nKV, c.D}, bf16),
                     v = at::randn({N, c.nKV, c.D}, bf16), dout = at::randn({N, c.nH, c.D}, bf16);
    const at::Tensor cu = at::arange(0, N + 1, c.len, bf16.dtype(at::kInt));
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.D));
    at::Tensor lse;
    const at::Tensor out = ops::flash_attention_forward(q, k, v, cu, c.len, &lse);
    const ops::AttentionGrads g = ops::flash_attention_backward(dout, q, k, v, out, lse, cu, c.len);
    const double flash_f = time_ms([&] { ops::flash_attention_forward(q, k, v, cu, c.len, &lse); });
    const double flash_b = time_ms([&] { ops::flash_attention_backward(dout, q, k, v, out, lse, cu, c.len); });
    std::string cudnn = "cuDNN: ";
    try {
      auto fwd = [&] {
        return at::_cudnn_attention_forward(q, k, v, std::nullopt, cu, cu, c.len, c.len, true, 0.0, true, false, scale);
      };
      auto [o2, lse2, cq, ck, mq, mk, seed, offset, dbg] = fwd();
      auto bwd = [&] {
        return at::_cudnn_attention_backward(dout, q, k, v, o2, lse2, seed, offset, at::Tensor(), cu, cu, c.len, c.len,
                                             0.0, true, scale);
      };
      auto [dq2, dk2, dv2] = bwd();
      const double f = time_ms([&] { fwd(); }), b = time_ms([&] { bwd(); });
      cudnn += fmt::format("fwd {:.3f} ms, bwd {:.3f} ms; out rel {:.1e}, dq {:.1e}, dk {:.1e}, dv {:.1e}", f, b,
                           rel(o2, out), rel(dq2, g.dq), rel(dk2, g.dk), rel(dv2, g.dv));
    } catch (const std::exception& e) {
      cudnn += std::string("failed: ") + std::string(e.what()).substr(0, 300);
    }
    // cuDNN's dense (one sequence per row) form, [B, heads, T, D] views of the same [B, T, heads, D] memory.
    std::string dense = "cuDNN dense: ";
    try {
      auto bhsd = [&](const at::Tensor& t) { return t.view({c.seqs, c.len, t.size(1), c.D}).transpose(1, 2); };
      auto fwd = [&] {
        return at::_scaled_dot_product_cudnn_attention(bhsd(q), bhsd(k), bhsd(v), std::nullopt, true, 0.0, true,
                                                       false, scale);
      };
      auto [o3, lse3, cq, ck, mq, mk, seed, offset, dbg] = fwd();
      auto bwd = [&] {
        return at::_scaled_dot_product_cudnn_attention_backward(bhsd(dout), bhsd(q), bhsd(k), bhsd(v), o3, lse3, seed,
                                                                offset, at::Tensor(), at::Tensor(), at::Tensor(),
                                                                c.len, c.len, 0.0, true, scale);
      };
      auto [dq3, dk3, dv3] = bwd();
      const double f = time_ms([&] { fwd(); }), b = time_ms([&] { bwd(); });
      auto back = [&](const at::Tensor& t) { return t.transpose(1, 2).reshape({N, t.size(1), c.D}); };
      dense += fmt::format("fwd {:.3f} ms, bwd {:.3f} ms; out rel {:.1e}, dq {:.1e}, dk {:.1e}, dv {:.1e}", f, b,
                           rel(back(o3), out), rel(back(dq3), g.dq), rel(back(dk3), g.dk), rel(back(dv3), g.dv));
    } catch (const std::exception& e) {
      dense += std::string("failed: ") + std::string(e.what()).substr(0, 300);
    }
    std::printf("| attention %lldx%lld tokens, %lld/%lld heads | %s |\n", static_cast<long long>(c.seqs),
                static_cast<long long>(c.len), static_cast<long long>(c.nH), static_cast<long long>(c.nKV),
                dense.c_str());
    std::printf("| attention %lldx%lld tokens, %lld/%lld heads | FA2 fwd %.3f ms, bwd %.3f ms | %s |\n",
                static_cast<long long>(c.seqs), static_cast<long long>(c.len), static_cast<long long>(c.nH),
                static_cast<long long>(c.nKV), flash_f, flash_b, cudnn.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string part = argc > 1 ? argv[1] : "all";
  if (!ops::fused::compiled()) {
    std::printf("FAIL this build has no fused kernels (no nvcc at configure time)\n");
    return 1;
  }
  try {
    if (part == "all" || part == "check") {
      check_model_steps();
      check_adamw();
      check_nf4();
    }
    if (part == "all" || part == "bench") {
      bench_steps();
      bench_attention();
    }
  } catch (const std::exception& e) {
    std::printf("FAIL exception: %s\n", e.what());
    return 1;
  }
  std::printf("%s: %d failure(s)\n", g_failures == 0 ? "PASSED" : "FAILED", g_failures);
  return g_failures == 0 ? 0 : 1;
}
