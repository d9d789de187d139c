// qft's CUDA kernels: plain launchers over raw device pointers (llm.c style), bf16 and fp32 overloads,
// fp32 math inside. Each returns cudaErrorInvalidValue for a shape or alignment it does not support
// (nothing is launched then) and otherwise the launch status (cudaGetLastError). All pointers are device
// pointers, row-major, 16-byte aligned (cudaMalloc'd buffers and offsets that keep rows aligned).
// Each launcher is validated and benchmarked by kernels/dev/<op>_check.cu (see kernels/README.md).
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace qft::kernels {

// ---- RMSNorm (rms_norm.cu): N rows of C (C % 8 == 0 for bf16, % 4 for fp32) ----
// out = w * x * rstd; rstd[N] (fp32, may be null) is kept for the backward.
cudaError_t rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps,
                             cudaStream_t stream);
cudaError_t rms_norm_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* w, int N,
                             int C, float eps, cudaStream_t stream);
// dx from dy; dw (fp32 [C], may be null) is accumulated (+=) using `scratch` of
// rms_norm_backward_scratch_floats(N, C) floats.
size_t rms_norm_backward_scratch_floats(int N, int C);
cudaError_t rms_norm_backward(float* dx, float* dw, float* scratch, const float* dy, const float* x, const float* w,
                              const float* rstd, int N, int C, cudaStream_t stream);
cudaError_t rms_norm_backward(__nv_bfloat16* dx, float* dw, float* scratch, const __nv_bfloat16* dy,
                              const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd, int N, int C,
                              cudaStream_t stream);

// ---- q_norm/k_norm + RoPE (qk_norm_rope.cu): x [tokens, heads, D], D in {64, 128, 256} ----
// out = rope(w * x * rstd) per head; cos/sin [tokens, D] (rope_tables' layout: halves repeat, the first
// half is read); rstd [tokens*heads] (may be null).
cudaError_t qk_norm_rope_forward(float* out, float* rstd, const float* x, const float* w, const float* cos,
                                 const float* sin, int tokens, int heads, int D, float eps, cudaStream_t stream);
cudaError_t qk_norm_rope_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* w,
                                 const __nv_bfloat16* cos, const __nv_bfloat16* sin, int tokens, int heads, int D,
                                 float eps, cudaStream_t stream);
// dx from dy (the gradient of `out`); dw (fp32 [D], may be null) accumulated using `scratch` of
// qk_norm_rope_backward_scratch_floats(tokens, heads, D) floats.
size_t qk_norm_rope_backward_scratch_floats(int tokens, int heads, int D);
cudaError_t qk_norm_rope_backward(float* dx, float* dw, float* scratch, const float* dy, const float* x,
                                  const float* w, const float* rstd, const float* cos, const float* sin, int tokens,
                                  int heads, int D, cudaStream_t stream);
cudaError_t qk_norm_rope_backward(__nv_bfloat16* dx, float* dw, float* scratch, const __nv_bfloat16* dy,
                                  const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                                  const __nv_bfloat16* cos, const __nv_bfloat16* sin, int tokens, int heads, int D,
                                  cudaStream_t stream);

// ---- SwiGLU (swiglu.cu): n elements ----
// h = silu(gate) * up; backward: dgate, dup from dh.
cudaError_t swiglu_forward(float* h, const float* gate, const float* up, int64_t n, cudaStream_t stream);
cudaError_t swiglu_forward(__nv_bfloat16* h, const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t n,
                           cudaStream_t stream);
cudaError_t swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n,
                            cudaStream_t stream);
cudaError_t swiglu_backward(__nv_bfloat16* dgate, __nv_bfloat16* dup, const __nv_bfloat16* dh,
                            const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t n, cudaStream_t stream);

// ---- AdamW (adamw.cu): one flat fp32 buffer of n elements ----
// The per-step scalars, computed on the host in double as torch does, rounded to float.
struct AdamWScalars {
  float decay_factor;           // 1 - lr * weight_decay
  float one_minus_beta1;        // lerp weight of exp_avg
  float beta2, one_minus_beta2;
  float neg_step_size;          // -lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float eps;
};
AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step);
// Weight decay by ranges: range r = [range_end[r-1], range_end[r]) decays iff range_decay[r] != 0;
// range_end (device, int64, increasing) must end with n.
cudaError_t adamw_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, int64_t n,
                       const int64_t* range_end, const uint8_t* range_decay, int num_ranges, const AdamWScalars& s,
                       cudaStream_t stream);

// ---- Cross-entropy (cross_entropy.cu) ----
// In place over rows x V logits (V % 8 == 0 for bf16): losses[r] = logsumexp - logit[target]
// (0 for target -100, NaN for a target outside [0, V)), logits become (softmax - onehot) * dlogits_scale.
cudaError_t cross_entropy_forward_backward(float* logits, float* losses, const int64_t* targets, int rows, int V,
                                           float dlogits_scale, cudaStream_t stream);
cudaError_t cross_entropy_forward_backward(__nv_bfloat16* logits, float* losses, const int64_t* targets, int rows,
                                           int V, float dlogits_scale, cudaStream_t stream);
// The chunked lm_head + loss: h [N, C], W [V, C] (lm_head / tied embedding), targets [N]; losses [N];
// dh [N, C] (written, may be null); dW [V, C] fp32 (accumulated, may be null); logits_workspace holds
// chunk_tokens x V bf16. cuBLAS failures return cudaErrorUnknown.
cudaError_t lm_head_cross_entropy(float* losses, __nv_bfloat16* dh, float* dW, const __nv_bfloat16* h,
                                  const __nv_bfloat16* W, const int64_t* targets, int N, int C, int V,
                                  int chunk_tokens, float dlogits_scale, __nv_bfloat16* logits_workspace,
                                  cublasHandle_t cublas, cudaStream_t stream);

// ---- NF4 dequantization (nf4.cu), bitsandbytes layout (src/model/nf4.h) ----
// out[n] bf16 from packed[(n+1)/2] (8-byte aligned), double-quantized absmax (absmax_codes [blocks] into
// code2 [256], absmax2 [blocks / nested_blocksize], offset). blocksize, nested_blocksize: powers of two >= 32.
cudaError_t nf4_dequantize(__nv_bfloat16* out, const uint8_t* packed, const uint8_t* absmax_codes,
                           const float* absmax2, const float* code2, float offset, int64_t n, int blocksize,
                           int nested_blocksize, cudaStream_t stream);
// The same with a plain fp32 absmax [blocks] (no double quantization).
cudaError_t nf4_dequantize_plain(__nv_bfloat16* out, const uint8_t* packed, const float* absmax, int64_t n,
                                 int blocksize, cudaStream_t stream);

}  // namespace qft::kernels
