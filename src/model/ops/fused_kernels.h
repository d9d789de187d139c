// qft's CUDA kernels (kernels/, llm.c style launchers over raw pointers) behind the ops. Each function
// here runs its kernel when it applies — a CUDA build with the kernels compiled in, the switch on, a CUDA
// tensor in bf16 or fp32 of a shape the kernel supports — and otherwise returns an undefined tensor
// (or false) without touching anything, so the calling op runs its ATen path. The kernels are validated
// against fp64 references in kernels/dev/ and the whole layer against the ATen path in
// tests/device/fused_check.cpp; results differ from ATen's only by rounding (fp32 math inside, one
// rounding to the output dtype).
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace qft::model::ops::fused {

// Whether this build has the kernels (a CUDA build where nvcc was found).
bool compiled();
// Process-wide switch, on by default: the trainer sets it once from `training.use_fused_kernels`; the GPU
// checks flip it to compare the two paths on the same inputs.
void set_enabled(bool on);
bool enabled();
// Kernels launched by this process so far: the GPU checks use it to prove the fused path really ran.
int64_t launches();

// x [..., C], w [C]; *rstd fp32 [...].
at::Tensor rms_norm_forward(const at::Tensor& x, const at::Tensor& w, double eps, at::Tensor* rstd);
// dx; *dw (any dtype) accumulates the weight gradient.
at::Tensor rms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w, const at::Tensor& rstd,
                             at::Tensor* dw);

// Qwen3's per-head norm then RoPE, fused: x [N, heads, D], cos/sin [N, D] in x's dtype; *rstd fp32 [N, heads].
at::Tensor qk_norm_rope_forward(const at::Tensor& x, const at::Tensor& w, double eps, const at::Tensor& cos,
                                const at::Tensor& sin, at::Tensor* rstd);
at::Tensor qk_norm_rope_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w,
                                 const at::Tensor& rstd, const at::Tensor& cos, const at::Tensor& sin, at::Tensor* dw);

at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up);
std::optional<std::pair<at::Tensor, at::Tensor>> swiglu_backward(const at::Tensor& dh, const at::Tensor& gate,
                                                                 const at::Tensor& up);

// In place over logits [n, V]: *losses fp32 [n] = logsumexp - logit[target] and logits become
// (softmax - onehot) * dlogits_scale. targets int64 [n], all in [0, V).
bool cross_entropy_in_place(at::Tensor& logits, at::Tensor* losses, const at::Tensor& targets, double dlogits_scale);

// torch.optim.AdamW over flat fp32 buffers of n elements; weight decay by ranges: range r ends at
// range_end[r] (int64, on the parameters' device, the last = n) and decays iff range_decay[r] (uint8) != 0.
bool adamw_step(at::Tensor& params, const at::Tensor& grads, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
                const at::Tensor& range_end, const at::Tensor& range_decay, double lr, double beta1, double beta2,
                double eps, double weight_decay, int64_t step);

// NF4 (bitsandbytes layout, the standard NF4 code book) to bf16 into `out` (n elements): with
// double-quantized absmax (uint8 codes, nested fp32 absmax, nested code book, offset) or plain fp32 absmax.
bool nf4_dequantize(at::Tensor& out, const at::Tensor& packed, const at::Tensor& absmax, const at::Tensor& nested_absmax,
                    const at::Tensor& nested_quant_map, float offset, bool nested, int64_t n, int blocksize,
                    int nested_blocksize);

}  // namespace qft::model::ops::fused
