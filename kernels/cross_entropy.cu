// Cross-entropy over the vocabulary for one chunk of token rows, fused: loss = logsumexp(z) - z[t] and
// dlogits = (softmax(z) - onehot(t)) * scale written in place over the logits, as
// src/model/ops/cross_entropy.cpp computes per chunk (scale = 1/denominator folded in here, so dh and dW
// come out of the GEMMs already scaled). One block per row: pass 1 keeps a per-thread online
// (max, sum of exp) over 16-byte packs and merges them across the block; pass 2 rewrites the row. 6 bytes
// of traffic per bf16 logit. Rows whose target is -100 get loss 0 and a zero gradient row.
//
// lm_head_cross_entropy runs the whole loss: per chunk of tokens, logits = h_chunk @ W^T (cuBLAS, bf16 in,
// fp32 accumulate, bf16 out into a chunk x V workspace), the fused kernel, then dh_chunk = dlogits @ W
// and dW += dlogits^T @ h_chunk (fp32). The full N x V logits never exist.
#include <cublas_v2.h>

#include <cfloat>

#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int64_t kIgnoreIndex = -100;

__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mx = fmaxf(m, m2);
  s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
  m = mx;
}

template <class T>
__global__ void cross_entropy_kernel(T* logits, float* losses, const int64_t* targets, int V, float scale) {
  constexpr int P = kPack16<T>;
  __shared__ float shared_m[kThreads / 32], shared_s[kThreads / 32];
  __shared__ float target_logit;
  T* row = logits + static_cast<size_t>(blockIdx.x) * V;
  const int64_t t = targets[blockIdx.x];
  const bool ignored = t == kIgnoreIndex, valid = t >= 0 && t < V;
  if (ignored) {  // zero gradient row, zero loss
    Pack16<T> zero;
#pragma unroll
    for (int k = 0; k < P; ++k) zero.v[k] = from_float<T>(0.f);
    for (int c = threadIdx.x * P; c < V; c += kThreads * P) store_pack(row + c, zero);
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.f;
    return;
  }
  if (threadIdx.x == 0) target_logit = valid ? to_float(row[t]) : __int_as_float(0x7fc00000);  // NaN flags a bad label
  float m = -FLT_MAX, s = 0.f;
  for (int c = threadIdx.x * P; c < V; c += kThreads * P) {
    const Pack16<T> p = load_pack<Pack16<T>>(row + c);
    float pack_max = -FLT_MAX;
#pragma unroll
    for (int k = 0; k < P; ++k) pack_max = fmaxf(pack_max, to_float(p.v[k]));
    if (pack_max > m) {
      s *= __expf(m - pack_max);
      m = pack_max;
    }
#pragma unroll
    for (int k = 0; k < P; ++k) s += __expf(to_float(p.v[k]) - m);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    shared_m[warp] = m;
    shared_s[warp] = s;
  }
  __syncthreads();  // also orders thread 0's read of row[t] before pass 2 rewrites it
  m = shared_m[0];
  s = shared_s[0];
  for (int w = 1; w < kThreads / 32; ++w) merge(m, s, shared_m[w], shared_s[w]);
  const float lse = m + logf(s);
  if (threadIdx.x == 0) losses[blockIdx.x] = lse - target_logit;
  for (int c = threadIdx.x * P; c < V; c += kThreads * P) {
    const Pack16<T> p = load_pack<Pack16<T>>(row + c);
    Pack16<T> d;
#pragma unroll
    for (int k = 0; k < P; ++k) {
      const float prob = __expf(to_float(p.v[k]) - lse);
      d.v[k] = from_float<T>((c + k == t ? prob - 1.f : prob) * scale);
    }
    store_pack(row + c, d);
  }
}

template <class T>
cudaError_t ce_impl(T* logits, float* losses, const int64_t* targets, int rows, int V, float scale, cudaStream_t stream) {
  if (rows <= 0 || V <= 0 || V % kPack16<T> != 0 || !aligned16(logits)) return cudaErrorInvalidValue;
  cross_entropy_kernel<T><<<rows, kThreads, 0, stream>>>(logits, losses, targets, V, scale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t cross_entropy_forward_backward(float* logits, float* losses, const int64_t* targets, int rows, int V,
                                           float dlogits_scale, cudaStream_t stream) {
  return ce_impl(logits, losses, targets, rows, V, dlogits_scale, stream);
}
cudaError_t cross_entropy_forward_backward(__nv_bfloat16* logits, float* losses, const int64_t* targets, int rows,
                                           int V, float dlogits_scale, cudaStream_t stream) {
  return ce_impl(logits, losses, targets, rows, V, dlogits_scale, stream);
}

// Row-major X[r, c] is column-major X^T, so each row-major product below is issued as its transpose.
cudaError_t lm_head_cross_entropy(float* losses, __nv_bfloat16* dh, float* dW, const __nv_bfloat16* h,
                                  const __nv_bfloat16* W, const int64_t* targets, int N, int C, int V,
                                  int chunk_tokens, float dlogits_scale, __nv_bfloat16* logits_workspace,
                                  cublasHandle_t cublas, cudaStream_t stream) {
  if (N <= 0 || C <= 0 || V <= 0 || chunk_tokens <= 0 || logits_workspace == nullptr) return cudaErrorInvalidValue;
  if (cublasSetStream(cublas, stream) != CUBLAS_STATUS_SUCCESS) return cudaErrorUnknown;
  const float one = 1.f, zero = 0.f;
  for (int c0 = 0; c0 < N; c0 += chunk_tokens) {
    const int n = N - c0 < chunk_tokens ? N - c0 : chunk_tokens;
    const __nv_bfloat16* hc = h + static_cast<size_t>(c0) * C;
    // logits[n, V] = hc[n, C] @ W[V, C]^T
    if (cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, V, n, C, &one, W, CUDA_R_16BF, C, hc, CUDA_R_16BF, C, &zero,
                     logits_workspace, CUDA_R_16BF, V, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
      return cudaErrorUnknown;
    const cudaError_t err = cross_entropy_forward_backward(logits_workspace, losses + c0, targets + c0, n, V,
                                                          dlogits_scale, stream);
    if (err != cudaSuccess) return err;
    // dh[n, C] = dlogits[n, V] @ W[V, C]
    if (dh != nullptr &&
        cublasGemmEx(cublas, CUBLAS_OP_N, CUBLAS_OP_N, C, n, V, &one, W, CUDA_R_16BF, C, logits_workspace, CUDA_R_16BF,
                     V, &zero, dh + static_cast<size_t>(c0) * C, CUDA_R_16BF, C, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
      return cudaErrorUnknown;
    // dW[V, C] += dlogits[n, V]^T @ hc[n, C]
    if (dW != nullptr &&
        cublasGemmEx(cublas, CUBLAS_OP_N, CUBLAS_OP_T, C, V, n, &one, hc, CUDA_R_16BF, C, logits_workspace, CUDA_R_16BF,
                     V, &one, dW, CUDA_R_32F, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
      return cudaErrorUnknown;
  }
  return cudaGetLastError();
}

}  // namespace qft::kernels
