// RMSNorm over rows of C elements: y = w * x * rstd, rstd = 1/sqrt(mean(x^2) + eps), as
// src/model/ops/rms_norm.cpp computes it (also used per head, C = head_dim, for Qwen3's q_norm/k_norm).
// One warp per row, 16-byte loads. Version 2 (the default) holds the row in registers: all of a lane's
// loads are issued at once (the memory-level parallelism a bandwidth-bound kernel needs) and the row is
// read from memory once; it covers C up to 4096 (2048 for the fp32 backward), see packs_per_lane. Version 1
// (kept for wider rows and as the reference point of the benchmark) loops over the row twice, the
// second read hitting L1/L2. Everything is computed in fp32 and rounded once on the store (the
// at:: path rounds x*rstd to the activation dtype before multiplying by w: at most one bf16 ulp apart).
//
// Backward: dx = rstd * (g - x * rstd^2 * mean(g*x)) with g = dy*w, one warp per row again.
// dw (optional, fp32, accumulated) needs a sum over rows; a separate column kernel does it in two
// deterministic stages (per row-slice partial sums into `scratch`, then a fixed-order sum), so the
// result does not depend on scheduling, unlike float atomics.
#include <type_traits>

#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int kDwRowSlices = 128;  // stage-1 row slices of the dw reduction (scratch = slices * C floats)

template <class T>
__global__ void rms_norm_forward_kernel(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps) {
  constexpr int V = kPack16<T>;
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;  // whole warps leave together
  const T* xr = x + static_cast<size_t>(row) * C;
  float sum_sq = 0.f;
  for (int c = lane * V; c < C; c += 32 * V) {
    const Pack16<T> p = load_pack<Pack16<T>>(xr + c);
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float f = to_float(p.v[k]);
      sum_sq += f * f;
    }
  }
  const float r = rsqrtf(warp_sum(sum_sq) / static_cast<float>(C) + eps);
  if (rstd != nullptr && lane == 0) rstd[row] = r;
  T* yr = out + static_cast<size_t>(row) * C;
  for (int c = lane * V; c < C; c += 32 * V) {
    const Pack16<T> p = load_pack<Pack16<T>>(xr + c);
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
    Pack16<T> y;
#pragma unroll
    for (int k = 0; k < V; ++k) y.v[k] = from_float<T>(to_float(wp.v[k]) * (to_float(p.v[k]) * r));
    store_pack(yr + c, y);
  }
}

template <class T>
__global__ void rms_norm_backward_dx_kernel(T* dx, const T* dy, const T* x, const T* w, const float* rstd, int N,
                                            int C) {
  constexpr int V = kPack16<T>;
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t base = static_cast<size_t>(row) * C;
  float sum_gx = 0.f;
  for (int c = lane * V; c < C; c += 32 * V) {
    const Pack16<T> d = load_pack<Pack16<T>>(dy + base + c);
    const Pack16<T> xp = load_pack<Pack16<T>>(x + base + c);
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
#pragma unroll
    for (int k = 0; k < V; ++k) sum_gx += to_float(d.v[k]) * to_float(wp.v[k]) * to_float(xp.v[k]);
  }
  const float r = rstd[row];
  const float k_coef = r * r * (warp_sum(sum_gx) / static_cast<float>(C));
  for (int c = lane * V; c < C; c += 32 * V) {
    const Pack16<T> d = load_pack<Pack16<T>>(dy + base + c);
    const Pack16<T> xp = load_pack<Pack16<T>>(x + base + c);
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
    Pack16<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float g = to_float(d.v[k]) * to_float(wp.v[k]);
      o.v[k] = from_float<T>(r * (g - to_float(xp.v[k]) * k_coef));
    }
    store_pack(dx + base + c, o);
  }
}

// Version 2: the row cached in registers, PACKS 16-byte packs per lane (C <= 32 * PACKS * pack size).
template <class T, int PACKS>
__global__ void rms_norm_forward_kernel2(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps) {
  constexpr int V = kPack16<T>;
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const T* xr = x + static_cast<size_t>(row) * C;
  Pack16<T> xp[PACKS];
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    const int c = (p * 32 + lane) * V;
    if (c < C) xp[p] = load_pack<Pack16<T>>(xr + c);
  }
  float sum_sq = 0.f;
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    if ((p * 32 + lane) * V >= C) continue;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float f = to_float(xp[p].v[k]);
      sum_sq += f * f;
    }
  }
  const float r = rsqrtf(warp_sum(sum_sq) / static_cast<float>(C) + eps);
  if (rstd != nullptr && lane == 0) rstd[row] = r;
  T* yr = out + static_cast<size_t>(row) * C;
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    const int c = (p * 32 + lane) * V;
    if (c >= C) continue;
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
    Pack16<T> y;
#pragma unroll
    for (int k = 0; k < V; ++k) y.v[k] = from_float<T>(to_float(wp.v[k]) * (to_float(xp[p].v[k]) * r));
    store_pack(yr + c, y);
  }
}

template <class T, int PACKS>
__global__ void rms_norm_backward_dx_kernel2(T* dx, const T* dy, const T* x, const T* w, const float* rstd, int N,
                                             int C) {
  constexpr int V = kPack16<T>;
  const int row = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= N) return;
  const size_t base = static_cast<size_t>(row) * C;
  Pack16<T> dp[PACKS], xp[PACKS];
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    const int c = (p * 32 + lane) * V;
    if (c < C) {
      dp[p] = load_pack<Pack16<T>>(dy + base + c);
      xp[p] = load_pack<Pack16<T>>(x + base + c);
    }
  }
  const float r = rstd[row];
  float sum_gx = 0.f;
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    const int c = (p * 32 + lane) * V;
    if (c >= C) continue;
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
#pragma unroll
    for (int k = 0; k < V; ++k) sum_gx += to_float(dp[p].v[k]) * to_float(wp.v[k]) * to_float(xp[p].v[k]);
  }
  const float k_coef = r * r * (warp_sum(sum_gx) / static_cast<float>(C));
#pragma unroll
  for (int p = 0; p < PACKS; ++p) {
    const int c = (p * 32 + lane) * V;
    if (c >= C) continue;
    const Pack16<T> wp = load_pack<Pack16<T>>(w + c);
    Pack16<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float g = to_float(dp[p].v[k]) * to_float(wp.v[k]);
      o.v[k] = from_float<T>(r * (g - to_float(xp[p].v[k]) * k_coef));
    }
    store_pack(dx + base + c, o);
  }
}

// Packs per lane for version 2: the smallest power of two covering C, or 0 when C is too wide for the
// registers (the limits are where ptxas starts spilling: C <= 4096 forward, bf16 backward; 2048 fp32 backward).
template <class T>
int packs_per_lane(int C, bool backward) {
  const int max_packs = std::is_same<T, float>::value && !backward ? 32 : 16;
  for (int p = 1; p <= max_packs; p *= 2)
    if (32 * p * kPack16<T> >= C) return p;
  return 0;
}

template <class T>
void launch_forward2(int packs, dim3 grid, dim3 block, cudaStream_t stream, T* out, float* rstd, const T* x, const T* w,
                     int N, int C, float eps) {
  switch (packs) {
    case 1: rms_norm_forward_kernel2<T, 1><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps); break;
    case 2: rms_norm_forward_kernel2<T, 2><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps); break;
    case 4: rms_norm_forward_kernel2<T, 4><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps); break;
    case 8: rms_norm_forward_kernel2<T, 8><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps); break;
    case 16: rms_norm_forward_kernel2<T, 16><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps); break;
    default:
      if constexpr (std::is_same<T, float>::value)
        rms_norm_forward_kernel2<T, 32><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps);
      break;
  }
}

template <class T>
void launch_backward2(int packs, dim3 grid, dim3 block, cudaStream_t stream, T* dx, const T* dy, const T* x,
                      const T* w, const float* rstd, int N, int C) {
  switch (packs) {
    case 1: rms_norm_backward_dx_kernel2<T, 1><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C); break;
    case 2: rms_norm_backward_dx_kernel2<T, 2><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C); break;
    case 4: rms_norm_backward_dx_kernel2<T, 4><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C); break;
    case 8: rms_norm_backward_dx_kernel2<T, 8><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C); break;
    case 16: rms_norm_backward_dx_kernel2<T, 16><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C); break;
  }
}

// Stage 1 of dw: block (32, 8) covers 32 packs of columns; row slice blockIdx.y takes rows
// blockIdx.y*8 + threadIdx.y, stepping by gridDim.y*8. Partial sums go to scratch[blockIdx.y][C].
template <class T>
__global__ void rms_norm_backward_dw_partial_kernel(float* scratch, const T* dy, const T* x, const float* rstd, int N,
                                                    int C) {
  constexpr int V = kPack16<T>;
  __shared__ float partial[8][32 * V];
  const int c0 = (blockIdx.x * 32 + threadIdx.x) * V;
  float acc[V];
#pragma unroll
  for (int k = 0; k < V; ++k) acc[k] = 0.f;
  if (c0 < C) {
    for (int row = blockIdx.y * 8 + threadIdx.y; row < N; row += gridDim.y * 8) {
      const size_t base = static_cast<size_t>(row) * C + c0;
      const Pack16<T> d = load_pack<Pack16<T>>(dy + base);
      const Pack16<T> xp = load_pack<Pack16<T>>(x + base);
      const float r = rstd[row];
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k] += to_float(d.v[k]) * (to_float(xp.v[k]) * r);
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k) partial[threadIdx.y][threadIdx.x * V + k] = acc[k];
  __syncthreads();
  if (threadIdx.y != 0 || c0 >= C) return;
#pragma unroll
  for (int k = 0; k < V; ++k) {
    float s = 0.f;
    for (int y = 0; y < 8; ++y) s += partial[y][threadIdx.x * V + k];
    scratch[static_cast<size_t>(blockIdx.y) * C + c0 + k] = s;
  }
}

int dw_row_slices(int N) { return N < kDwRowSlices * 8 ? (N + 7) / 8 : kDwRowSlices; }

template <class T>
bool row_shape_ok(int N, int C, const void* a, const void* b, const void* c) {
  return N > 0 && C > 0 && C % kPack16<T> == 0 && aligned16(a) && aligned16(b) && aligned16(c);
}

constexpr int kDefaultVersion = 2;

// version 2 where the row fits in registers, else version 1.
template <class T>
cudaError_t forward_impl(T* out, float* rstd, const T* x, const T* w, int N, int C, float eps, cudaStream_t stream,
                         int version = kDefaultVersion) {
  if (!row_shape_ok<T>(N, C, out, x, w)) return cudaErrorInvalidValue;
  const dim3 grid(ceil_div(N, kWarpsPerBlock)), block(32 * kWarpsPerBlock);
  const int packs = packs_per_lane<T>(C, false);
  if (version == 2 && packs > 0)
    launch_forward2<T>(packs, grid, block, stream, out, rstd, x, w, N, C, eps);
  else
    rms_norm_forward_kernel<T><<<grid, block, 0, stream>>>(out, rstd, x, w, N, C, eps);
  return cudaGetLastError();
}

template <class T>
cudaError_t backward_impl(T* dx, float* dw, float* scratch, const T* dy, const T* x, const T* w, const float* rstd,
                          int N, int C, cudaStream_t stream, int version = kDefaultVersion) {
  if (!row_shape_ok<T>(N, C, dx, dy, x) || !aligned16(w) || (dw != nullptr && scratch == nullptr))
    return cudaErrorInvalidValue;
  const dim3 grid(ceil_div(N, kWarpsPerBlock)), block(32 * kWarpsPerBlock);
  const int packs = packs_per_lane<T>(C, true);
  if (version == 2 && packs > 0)
    launch_backward2<T>(packs, grid, block, stream, dx, dy, x, w, rstd, N, C);
  else
    rms_norm_backward_dx_kernel<T><<<grid, block, 0, stream>>>(dx, dy, x, w, rstd, N, C);
  if (dw != nullptr) {
    const int slices = dw_row_slices(N);
    const dim3 grid(ceil_div(C, 32 * kPack16<T>), slices);
    rms_norm_backward_dw_partial_kernel<T><<<grid, dim3(32, 8), 0, stream>>>(scratch, dy, x, rstd, N, C);
    sum_rows_accumulate(dw, scratch, slices, C, stream);
  }
  return cudaGetLastError();
}

}  // namespace

size_t rms_norm_backward_scratch_floats(int N, int C) { return static_cast<size_t>(dw_row_slices(N)) * C; }

cudaError_t rms_norm_forward(float* out, float* rstd, const float* x, const float* w, int N, int C, float eps,
                             cudaStream_t stream) {
  return forward_impl(out, rstd, x, w, N, C, eps, stream);
}
cudaError_t rms_norm_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x, const __nv_bfloat16* w, int N,
                             int C, float eps, cudaStream_t stream) {
  return forward_impl(out, rstd, x, w, N, C, eps, stream);
}
cudaError_t rms_norm_backward(float* dx, float* dw, float* scratch, const float* dy, const float* x, const float* w,
                              const float* rstd, int N, int C, cudaStream_t stream) {
  return backward_impl(dx, dw, scratch, dy, x, w, rstd, N, C, stream);
}
cudaError_t rms_norm_backward(__nv_bfloat16* dx, float* dw, float* scratch, const __nv_bfloat16* dy,
                              const __nv_bfloat16* x, const __nv_bfloat16* w, const float* rstd, int N, int C,
                              cudaStream_t stream) {
  return backward_impl(dx, dw, scratch, dy, x, w, rstd, N, C, stream);
}

}  // namespace qft::kernels
