#include "model/ops/fused_kernels.h"

#include <atomic>
#include <climits>

#include "core/error.h"
#include "model/ops/common.h"

#if QFT_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>

#include "qft_kernels.h"
#endif

namespace qft::model::ops::fused {
namespace {
std::atomic<bool> g_enabled{true};
std::atomic<int64_t> g_launches{0};
}  // namespace

bool compiled() {
#if QFT_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

void set_enabled(bool on) { g_enabled = on; }
bool enabled() { return g_enabled; }
int64_t launches() { return g_launches; }

#if QFT_CUDA_KERNELS
namespace {

cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream(); }

bool is_bf16(const at::Tensor& t) { return t.scalar_type() == at::kBFloat16; }

// The kernels take bf16 or fp32 tensors on the current device, contiguous.
bool applies(const at::Tensor& x) {
  return enabled() && x.defined() && x.is_cuda() && x.is_contiguous() &&
         (x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kFloat);
}

bool same_kind(const at::Tensor& a, const at::Tensor& b) {
  return b.defined() && b.is_cuda() && b.is_contiguous() && b.scalar_type() == a.scalar_type() &&
         b.device() == a.device();
}

bool fits_int(int64_t v) { return v > 0 && v <= INT_MAX; }

// cudaErrorInvalidValue: the launcher refused the shape or alignment before launching anything, so the
// caller may run ATen instead. Any other error is a real failure.
bool launched(cudaError_t status, const char* kernel) {
  if (status == cudaErrorInvalidValue) return false;
  QFT_CHECK(status == cudaSuccess, "CUDA kernel {} failed: {}", kernel, cudaGetErrorString(status));
  ++g_launches;
  return true;
}

__nv_bfloat16* bf16_ptr(const at::Tensor& t) { return reinterpret_cast<__nv_bfloat16*>(t.data_ptr()); }

// A weight-gradient destination the kernels can accumulate into directly (fp32, contiguous, same device),
// or a zeroed fp32 buffer that is added into *dw afterwards.
at::Tensor fp32_accumulator(const at::Tensor* dw, int64_t C, const at::Tensor& like) {
  if (dw == nullptr) return at::Tensor();
  if (dw->scalar_type() == at::kFloat && dw->is_contiguous() && dw->device() == like.device()) return *dw;
  return at::zeros({C}, like.options().dtype(at::kFloat));
}

void finish_accumulator(at::Tensor* dw, const at::Tensor& acc) {
  if (dw != nullptr && !acc.is_same(*dw)) accumulate(*dw, acc);
}

}  // namespace

at::Tensor rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor* rstd) {
  if (!applies(x)) return at::Tensor();
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (!fits_int(N) || w.numel() != C) return at::Tensor();
  const at::Tensor wc = w.to(x.device(), x.scalar_type()).contiguous();
  at::Tensor y = at::empty_like(x);
  at::Tensor r = at::empty(x.sizes().slice(0, x.dim() - 1), x.options().dtype(at::kFloat));
  const cudaError_t status =
      is_bf16(x) ? kernels::rms_norm_forward(bf16_ptr(y), r.data_ptr<float>(), bf16_ptr(x), bf16_ptr(wc), N, C, eps,
                                             current_stream())
                 : kernels::rms_norm_forward(y.data_ptr<float>(), r.data_ptr<float>(), x.data_ptr<float>(),
                                             wc.data_ptr<float>(), N, C, eps, current_stream());
  if (!launched(status, "rms_norm_forward")) return at::Tensor();
  if (rstd != nullptr) *rstd = r;
  return y;
}

at::Tensor rms_norm_backward(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& w,
                             const at::Tensor& rstd, at::Tensor* dw) {
  if (!applies(x) || rstd.scalar_type() != at::kFloat || !rstd.is_contiguous()) return at::Tensor();
  const at::Tensor dy = dy_in.contiguous();
  const int64_t C = x.size(-1), N = x.numel() / C;
  if (!same_kind(x, dy) || dy.numel() != x.numel() || rstd.numel() != N || !fits_int(N) || w.numel() != C)
    return at::Tensor();
  const at::Tensor wc = w.to(x.device(), x.scalar_type()).contiguous();
  at::Tensor dx = at::empty_like(x);
  at::Tensor acc = fp32_accumulator(dw, C, x);
  at::Tensor scratch;
  if (acc.defined())
    scratch = at::empty({static_cast<int64_t>(kernels::rms_norm_backward_scratch_floats(N, C))},
                        x.options().dtype(at::kFloat));
  float* dwp = acc.defined() ? acc.data_ptr<float>() : nullptr;
  float* sp = scratch.defined() ? scratch.data_ptr<float>() : nullptr;
  const cudaError_t status =
      is_bf16(x) ? kernels::rms_norm_backward(bf16_ptr(dx), dwp, sp, bf16_ptr(dy), bf16_ptr(x), bf16_ptr(wc),
                                              rstd.data_ptr<float>(), N, C, current_stream())
                 : kernels::rms_norm_backward(dx.data_ptr<float>(), dwp, sp, dy.data_ptr<float>(), x.data_ptr<float>(),
                                              wc.data_ptr<float>(), rstd.data_ptr<float>(), N, C, current_stream());
  if (!launched(status, "rms_norm_backward")) return at::Tensor();
  finish_accumulator(dw, acc);
  return dx;
}

at::Tensor qk_norm_rope_forward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& cos,
                                const at::Tensor& sin, at::Tensor* rstd) {
  if (!applies(x) || x.dim() != 3 || !same_kind(x, cos) || !same_kind(x, sin)) return at::Tensor();
  const int64_t N = x.size(0), heads = x.size(1), D = x.size(2);
  if (!fits_int(N) || !fits_int(heads) || cos.numel() != N * D || sin.numel() != N * D || w.numel() != D)
    return at::Tensor();
  const at::Tensor wc = w.to(x.device(), x.scalar_type()).contiguous();
  at::Tensor y = at::empty_like(x);
  at::Tensor r = at::empty({N, heads}, x.options().dtype(at::kFloat));
  const cudaError_t status =
      is_bf16(x) ? kernels::qk_norm_rope_forward(bf16_ptr(y), r.data_ptr<float>(), bf16_ptr(x), bf16_ptr(wc),
                                                 bf16_ptr(cos), bf16_ptr(sin), N, heads, D, eps, current_stream())
                 : kernels::qk_norm_rope_forward(y.data_ptr<float>(), r.data_ptr<float>(), x.data_ptr<float>(),
                                                 wc.data_ptr<float>(), cos.data_ptr<float>(), sin.data_ptr<float>(), N,
                                                 heads, D, eps, current_stream());
  if (!launched(status, "qk_norm_rope_forward")) return at::Tensor();
  if (rstd != nullptr) *rstd = r;
  return y;
}

at::Tensor qk_norm_rope_backward(const at::Tensor& dy_in, const at::Tensor& x, const at::Tensor& w,
                                 const at::Tensor& rstd, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* dw) {
  if (!applies(x) || x.dim() != 3 || !same_kind(x, cos) || !same_kind(x, sin) || rstd.scalar_type() != at::kFloat ||
      !rstd.is_contiguous())
    return at::Tensor();
  const at::Tensor dy = dy_in.contiguous();
  const int64_t N = x.size(0), heads = x.size(1), D = x.size(2);
  if (!same_kind(x, dy) || dy.numel() != x.numel() || rstd.numel() != N * heads || !fits_int(N) ||
      !fits_int(heads) || w.numel() != D || cos.numel() != N * D)
    return at::Tensor();
  const at::Tensor wc = w.to(x.device(), x.scalar_type()).contiguous();
  at::Tensor dx = at::empty_like(x);
  at::Tensor acc = fp32_accumulator(dw, D, x);
  at::Tensor scratch;
  if (acc.defined())
    scratch = at::empty({static_cast<int64_t>(kernels::qk_norm_rope_backward_scratch_floats(N, heads, D))},
                        x.options().dtype(at::kFloat));
  float* dwp = acc.defined() ? acc.data_ptr<float>() : nullptr;
  float* sp = scratch.defined() ? scratch.data_ptr<float>() : nullptr;
  const cudaError_t status =
      is_bf16(x) ? kernels::qk_norm_rope_backward(bf16_ptr(dx), dwp, sp, bf16_ptr(dy), bf16_ptr(x), bf16_ptr(wc),
                                                  rstd.data_ptr<float>(), bf16_ptr(cos), bf16_ptr(sin), N, heads, D,
                                                  current_stream())
                 : kernels::qk_norm_rope_backward(dx.data_ptr<float>(), dwp, sp, dy.data_ptr<float>(),
                                                  x.data_ptr<float>(), wc.data_ptr<float>(), rstd.data_ptr<float>(),
                                                  cos.data_ptr<float>(), sin.data_ptr<float>(), N, heads, D,
                                                  current_stream());
  if (!launched(status, "qk_norm_rope_backward")) return at::Tensor();
  finish_accumulator(dw, acc);
  return dx;
}

at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up) {
  if (!applies(gate) || !same_kind(gate, up) || up.numel() != gate.numel()) return at::Tensor();
  at::Tensor h = at::empty_like(gate);
  const int64_t n = gate.numel();
  const cudaError_t status =
      is_bf16(gate) ? kernels::swiglu_forward(bf16_ptr(h), bf16_ptr(gate), bf16_ptr(up), n, current_stream())
                    : kernels::swiglu_forward(h.data_ptr<float>(), gate.data_ptr<float>(), up.data_ptr<float>(), n,
                                              current_stream());
  if (!launched(status, "swiglu_forward")) return at::Tensor();
  return h;
}

std::optional<std::pair<at::Tensor, at::Tensor>> swiglu_backward(const at::Tensor& dh_in, const at::Tensor& gate,
                                                                 const at::Tensor& up) {
  if (!applies(gate) || !same_kind(gate, up) || up.numel() != gate.numel()) return std::nullopt;
  const at::Tensor dh = dh_in.contiguous();
  if (!same_kind(gate, dh) || dh.numel() != gate.numel()) return std::nullopt;
  at::Tensor dgate = at::empty_like(gate), dup = at::empty_like(up);
  const int64_t n = gate.numel();
  const cudaError_t status =
      is_bf16(gate) ? kernels::swiglu_backward(bf16_ptr(dgate), bf16_ptr(dup), bf16_ptr(dh), bf16_ptr(gate),
                                               bf16_ptr(up), n, current_stream())
                    : kernels::swiglu_backward(dgate.data_ptr<float>(), dup.data_ptr<float>(), dh.data_ptr<float>(),
                                               gate.data_ptr<float>(), up.data_ptr<float>(), n, current_stream());
  if (!launched(status, "swiglu_backward")) return std::nullopt;
  return std::make_pair(std::move(dgate), std::move(dup));
}

bool cross_entropy_in_place(at::Tensor& logits, at::Tensor* losses, const at::Tensor& targets_in,
                            double dlogits_scale) {
  if (!applies(logits) || logits.dim() != 2) return false;
  const int64_t rows = logits.size(0), V = logits.size(1);
  const at::Tensor targets = targets_in.to(at::kLong).contiguous();
  if (!fits_int(rows) || !fits_int(V) || targets.numel() != rows || targets.device() != logits.device()) return false;
  at::Tensor out = at::empty({rows}, logits.options().dtype(at::kFloat));
  const auto scale = static_cast<float>(dlogits_scale);
  const cudaError_t status =
      is_bf16(logits) ? kernels::cross_entropy_forward_backward(bf16_ptr(logits), out.data_ptr<float>(),
                                                                targets.data_ptr<int64_t>(), rows, V, scale,
                                                                current_stream())
                      : kernels::cross_entropy_forward_backward(logits.data_ptr<float>(), out.data_ptr<float>(),
                                                                targets.data_ptr<int64_t>(), rows, V, scale,
                                                                current_stream());
  if (!launched(status, "cross_entropy_forward_backward")) return false;
  if (losses != nullptr) *losses = out;
  return true;
}

bool adamw_step(at::Tensor& params, const at::Tensor& grads, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                const at::Tensor& range_end, const at::Tensor& range_decay, double lr, double beta1, double beta2,
                double eps, double weight_decay, int64_t step) {
  if (!applies(params) || params.scalar_type() != at::kFloat || !same_kind(params, grads) ||
      !same_kind(params, exp_avg) || !same_kind(params, exp_avg_sq) || range_end.device() != params.device() ||
      range_decay.device() != params.device() || !fits_int(range_end.numel()))
    return false;
  const int64_t n = params.numel();
  if (grads.numel() != n || exp_avg.numel() != n || exp_avg_sq.numel() != n) return false;
  const kernels::AdamWScalars s = kernels::adamw_scalars(lr, beta1, beta2, eps, weight_decay, step);
  return launched(kernels::adamw_step(params.data_ptr<float>(), grads.data_ptr<float>(), exp_avg.data_ptr<float>(),
                                      exp_avg_sq.data_ptr<float>(), n, range_end.data_ptr<int64_t>(),
                                      range_decay.data_ptr<uint8_t>(), static_cast<int>(range_end.numel()), s,
                                      current_stream()),
                  "adamw_step");
}

bool nf4_dequantize(at::Tensor& out, const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& nested_absmax,
                    const at::Tensor& nested_quant_map, float offset, bool nested, int64_t n, int blocksize,
                    int nested_blocksize) {
  if (!applies(out) || !is_bf16(out) || out.numel() < n || !packed.is_cuda() || !packed.is_contiguous() ||
      !absmax.is_contiguous())
    return false;
  const auto* codes = packed.data_ptr<uint8_t>();
  cudaError_t status;
  if (nested) {
    if (!nested_absmax.is_contiguous() || !nested_quant_map.is_contiguous()) return false;
    status = kernels::nf4_dequantize(bf16_ptr(out), codes, absmax.data_ptr<uint8_t>(), nested_absmax.data_ptr<float>(),
                                     nested_quant_map.data_ptr<float>(), offset, n, blocksize, nested_blocksize,
                                     current_stream());
  } else {
    status = kernels::nf4_dequantize_plain(bf16_ptr(out), codes, absmax.data_ptr<float>(), n, blocksize,
                                           current_stream());
  }
  return launched(status, "nf4_dequantize");
}

#else  // no kernels in this build: every op runs ATen.

at::Tensor rms_norm_forward(const at::Tensor&, const at::Tensor&, double, at::Tensor*) { return at::Tensor(); }
at::Tensor rms_norm_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor*) {
  return at::Tensor();
}
at::Tensor qk_norm_rope_forward(const at::Tensor&, const at::Tensor&, double, const at::Tensor&, const at::Tensor&,
                                at::Tensor*) {
  return at::Tensor();
}
at::Tensor qk_norm_rope_backward(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 const at::Tensor&, const at::Tensor&, at::Tensor*) {
  return at::Tensor();
}
at::Tensor swiglu_forward(const at::Tensor&, const at::Tensor&) { return at::Tensor(); }
std::optional<std::pair<at::Tensor, at::Tensor>> swiglu_backward(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&) {
  return std::nullopt;
}
bool cross_entropy_in_place(at::Tensor&, at::Tensor*, const at::Tensor&, double) { return false; }
bool adamw_step(at::Tensor&, const at::Tensor&, at::Tensor&, at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                double, double, double, double, int64_t) {
  return false;
}
bool nf4_dequantize(at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                    bool, int64_t, int, int) {
  return false;
}

#endif

}  // namespace qft::model::ops::fused
