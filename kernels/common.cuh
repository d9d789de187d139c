// Shared device helpers of the kernels in this folder: dtype conversions, 16-byte packs, warp sums.
// Every kernel reads and writes bf16 or fp32 and computes in fp32; a pack is the 16 bytes one thread
// moves per load (8 bf16 or 4 floats), the access width that memory-bound kernels need on sm_80/sm_90.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qft::kernels {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// K elements of T moved as one aligned access (K * sizeof(T) = 4, 8, 16 or 32 bytes).
template <class T, int K>
struct alignas(K * sizeof(T) >= 16 ? 16 : K * sizeof(T)) Pack {
  T v[K];
};
template <class T>
constexpr int kPack16 = 16 / static_cast<int>(sizeof(T));  // elements of a 16-byte pack
template <class T>
using Pack16 = Pack<T, kPack16<T>>;

template <class P>
__device__ __forceinline__ P load_pack(const void* p) { return *reinterpret_cast<const P*>(p); }
template <class P>
__device__ __forceinline__ void store_pack(void* p, const P& v) { *reinterpret_cast<P*>(p) = v; }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// dst[c] += sum over rows y of src[y][c], in a fixed order (deterministic): block (32, 32) takes 32
// columns, each thread row-strided partial sums, then thread row 0 adds the 32 partials in order.
// The second stage of the weight-gradient reductions (RMSNorm dw, q/k-norm dw).
namespace {
__global__ void sum_rows_accumulate_kernel(float* dst, const float* src, int rows, int C) {
  __shared__ float partial[32][33];
  const int c = blockIdx.x * 32 + threadIdx.x;
  float s = 0.f;
  if (c < C)
    for (int y = threadIdx.y; y < rows; y += 32) s += src[static_cast<size_t>(y) * C + c];
  partial[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y != 0 || c >= C) return;
  float total = 0.f;
  for (int y = 0; y < 32; ++y) total += partial[y][threadIdx.x];
  dst[c] += total;
}
}  // namespace

inline void sum_rows_accumulate(float* dst, const float* src, int rows, int C, cudaStream_t stream) {
  sum_rows_accumulate_kernel<<<(C + 31) / 32, dim3(32, 32), 0, stream>>>(dst, src, rows, C);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }

}  // namespace qft::kernels
