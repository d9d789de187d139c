// Qwen3's q_norm/k_norm followed by rotate-half RoPE, fused: for each (token, head) row of D elements
//   n = w * x * rstd,  rstd = 1/sqrt(mean(x^2) + eps)          (RMSNorm over the head, weight w[D])
//   y1 = n1*c - n2*s,  y2 = n2*c + n1*s                         (halves of D; c, s = cos/sin[token][:D/2])
// as src/model/ops/rms_norm.cpp then rope.cpp compute it, in one pass instead of five.
// One warp per row; lane l holds the K = D/32 consecutive elements l*K..l*K+K-1, so an element's RoPE
// partner (i ± D/2) sits in lane l^16 and one shuffle brings it over. All in fp32, one rounding on store.
//
// Backward, same layout: dn = RoPE^T dy (dn1 = dy1*c + dy2*s, dn2 = dy2*c - dy1*s), then the RMSNorm
// backward dx = rstd * (g - x * rstd^2 * mean(g*x)), g = dn*w. dw (optional, fp32, accumulated) = sum over
// rows of dn * x * rstd: each warp keeps its lane's K columns in registers over the rows it visits,
// writes them to scratch[warp][D], and a fixed-order column sum adds them into dw (deterministic).
#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kMaxBackwardBlocks = 512;  // grid of the backward kernel; scratch holds one row per warp

int backward_blocks(int rows) {
  const int needed = ceil_div(rows, kWarpsPerBlock);
  return needed < kMaxBackwardBlocks ? needed : kMaxBackwardBlocks;
}

template <class T, int K>
__global__ void qk_norm_rope_forward_kernel(T* out, float* rstd, const T* x, const T* w, const T* cos, const T* sin,
                                            int rows, int heads, float eps) {
  constexpr int D = 32 * K, H = D / 2;
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const size_t token = static_cast<size_t>(row / heads);
  const int i0 = lane * K;
  const Pack<T, K> xp = load_pack<Pack<T, K>>(x + static_cast<size_t>(row) * D + i0);
  const Pack<T, K> wp = load_pack<Pack<T, K>>(w + i0);
  const Pack<T, K> cp = load_pack<Pack<T, K>>(cos + token * D + i0 % H);
  const Pack<T, K> sp = load_pack<Pack<T, K>>(sin + token * D + i0 % H);
  float xf[K], sum_sq = 0.f;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    xf[k] = to_float(xp.v[k]);
    sum_sq += xf[k] * xf[k];
  }
  const float r = rsqrtf(warp_sum(sum_sq) / static_cast<float>(D) + eps);
  if (rstd != nullptr && lane == 0) rstd[row] = r;
  const float sign = lane < 16 ? -1.f : 1.f;  // first half subtracts the partner's sine term
  Pack<T, K> y;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const float n = to_float(wp.v[k]) * (xf[k] * r);
    const float partner = __shfl_xor_sync(0xffffffffu, n, 16);
    y.v[k] = from_float<T>(n * to_float(cp.v[k]) + sign * partner * to_float(sp.v[k]));
  }
  store_pack(out + static_cast<size_t>(row) * D + i0, y);
}

template <class T, int K>
__global__ void qk_norm_rope_backward_kernel(T* dx, float* dw_scratch, const T* dy, const T* x, const T* w,
                                             const float* rstd, const T* cos, const T* sin, int rows, int heads) {
  constexpr int D = 32 * K, H = D / 2;
  const int lane = threadIdx.x % 32;
  const int warp = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int i0 = lane * K;
  const Pack<T, K> wp = load_pack<Pack<T, K>>(w + i0);
  const float sign = lane < 16 ? 1.f : -1.f;  // dn1 = dy1*c + dy2*s, dn2 = dy2*c - dy1*s
  float dw_acc[K];
#pragma unroll
  for (int k = 0; k < K; ++k) dw_acc[k] = 0.f;
  for (int row = warp; row < rows; row += gridDim.x * kWarpsPerBlock) {
    const size_t token = static_cast<size_t>(row / heads), base = static_cast<size_t>(row) * D + i0;
    const Pack<T, K> dp = load_pack<Pack<T, K>>(dy + base);
    const Pack<T, K> xp = load_pack<Pack<T, K>>(x + base);
    const Pack<T, K> cp = load_pack<Pack<T, K>>(cos + token * D + i0 % H);
    const Pack<T, K> sp = load_pack<Pack<T, K>>(sin + token * D + i0 % H);
    const float r = rstd[row];
    float dn[K], sum_gx = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float d = to_float(dp.v[k]);
      const float partner = __shfl_xor_sync(0xffffffffu, d, 16);
      dn[k] = d * to_float(cp.v[k]) + sign * partner * to_float(sp.v[k]);
      sum_gx += dn[k] * to_float(wp.v[k]) * to_float(xp.v[k]);
      dw_acc[k] += dn[k] * (to_float(xp.v[k]) * r);
    }
    const float k_coef = r * r * (warp_sum(sum_gx) / static_cast<float>(D));
    Pack<T, K> o;
#pragma unroll
    for (int k = 0; k < K; ++k) o.v[k] = from_float<T>(r * (dn[k] * to_float(wp.v[k]) - to_float(xp.v[k]) * k_coef));
    store_pack(dx + base, o);
  }
  if (dw_scratch != nullptr) {
#pragma unroll
    for (int k = 0; k < K; ++k) dw_scratch[static_cast<size_t>(warp) * D + i0 + k] = dw_acc[k];
  }
}

template <class T>
cudaError_t forward_impl(T* out, float* rstd, const T* x, const T* w, const T* cos, const T* sin, int tokens,
                         int heads, int D, float eps, cudaStream_t stream) {
  const int rows = tokens * heads;
  if (tokens <= 0 || heads <= 0) return cudaErrorInvalidValue;
  const dim3 grid(ceil_div(rows, kWarpsPerBlock)), block(32 * kWarpsPerBlock);
  switch (D) {
    case 64: qk_norm_rope_forward_kernel<T, 2><<<grid, block, 0, stream>>>(out, rstd, x, w, cos, sin, rows, heads, eps); break;
    case 128: qk_norm_rope_forward_kernel<T, 4><<<grid, block, 0, stream>>>(out, rstd, x, w, cos, sin, rows, heads, eps); break;
    case 256: qk_norm_rope_forward_kernel<T, 8><<<grid, block, 0, stream>>>(out, rstd, x, w, cos, sin, rows, heads, eps); break;
    default: return cudaErrorInvalidValue;  // head_dim 64, 128 (all Qwen3 sizes) or 256
  }
  return cudaGetLastError();
}

template <class T>
cudaError_t backward_impl(T* dx, float* dw, float* scratch, const T* dy, const T* x, const T* w, const float* rstd,
                          const T* cos, const T* sin, int tokens, int heads, int D, cudaStream_t stream) {
  const int rows = tokens * heads;
  if (tokens <= 0 || heads <= 0 || (dw != nullptr && scratch == nullptr)) return cudaErrorInvalidValue;
  float* dw_scratch = dw != nullptr ? scratch : nullptr;
  const dim3 grid(backward_blocks(rows)), block(32 * kWarpsPerBlock);
  switch (D) {
    case 64: qk_norm_rope_backward_kernel<T, 2><<<grid, block, 0, stream>>>(dx, dw_scratch, dy, x, w, rstd, cos, sin, rows, heads); break;
    case 128: qk_norm_rope_backward_kernel<T, 4><<<grid, block, 0, stream>>>(dx, dw_scratch, dy, x, w, rstd, cos, sin, rows, heads); break;
    case 256: qk_norm_rope_backward_kernel<T, 8><<<grid, block, 0, stream>>>(dx, dw_scratch, dy, x, w, rstd, cos, sin, rows, heads); break;
    default: return cudaErrorInvalidValue;
  }
  if (dw != nullptr) sum_rows_accumulate(dw, scratch, grid.x * kWarpsPerBlock, D, stream);
  return cudaGetLastError();
}

}  // namespace

size_t qk_norm_rope_backward_scratch_floats(int tokens, int heads, int D) {
  return static_cast<size_t>(backward_blocks(tokens * heads)) * kWarpsPerBlock * D;
}

cudaError_t qk_norm_rope_forward(float* out, float* rstd, const float* x, const float* w, const float* cos,
                                 const float* sin, int tokens, int heads, int D, float eps, cudaStream_t stream) {
  return forward_impl(out, rstd, x, w, cos, sin, tokens, heads, D, eps, stream);
}
cudaError_t qk_norm_rope_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* w,
                                 const __nv_bfloat16* cos, const __nv_bfloat16* sin, int tokens, int heads, int D,
                                 float eps, cudaStream_t stream) {
  return forward_impl(out, rstd, x, w, cos, sin, tokens, heads, D, eps, stream);
}
cudaError_t qk_norm_rope_backward(float* dx, float* dw, float* scratch, const float* dy, const float* x,
                                  const float* w, const float* rstd, const float* cos, const float* sin, int tokens,
                                  int heads, int D, cudaStream_t stream) {
  return backward_impl(dx, dw, scratch, dy, x, w, rstd, cos, sin, tokens, heads, D, stream);
}
cudaError_t qk_norm_rope_backward(__nv_bfloat16* dx, float* dw, float* scratch, const __nv_bfloat16* dy,
                                  const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd,
                                  const __nv_bfloat16* cos, const __nv_bfloat16* sin, int tokens, int heads, int D,
                                  cudaStream_t stream) {
  return backward_impl(dx, dw, scratch, dy, x, w, rstd, cos, sin, tokens, heads, D, stream);
}

}  // namespace qft::kernels
