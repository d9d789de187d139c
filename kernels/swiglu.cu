// SwiGLU, the Qwen3 MLP's activation: h = silu(gate) * up, silu(g) = g * sigmoid(g), as
// src/model/ops/swiglu.cpp. Backward: dup = dh * silu(gate), dgate = dh * up * sigmoid(g) * (1 + g*(1 - sigmoid(g))).
// Element-wise and memory-bound: one 16-byte pack per thread, fp32 math, one rounding on store; the forward
// moves 3 values per element, the backward 5. A tail shorter than a pack is done element by element.
#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + expf(-g)); }

template <class T>
__global__ void swiglu_forward_kernel(T* h, const T* gate, const T* up, int64_t n) {
  constexpr int V = kPack16<T>;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (i + V <= n) {
    const Pack16<T> g = load_pack<Pack16<T>>(gate + i), u = load_pack<Pack16<T>>(up + i);
    Pack16<T> o;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float gf = to_float(g.v[k]);
      o.v[k] = from_float<T>(gf * sigmoid(gf) * to_float(u.v[k]));
    }
    store_pack(h + i, o);
  } else {
    for (int64_t j = i; j < n; ++j) {
      const float gf = to_float(gate[j]);
      h[j] = from_float<T>(gf * sigmoid(gf) * to_float(up[j]));
    }
  }
}

__device__ __forceinline__ void swiglu_grad(float d, float g, float u, float& dgate, float& dup) {
  const float s = sigmoid(g);
  dup = d * (g * s);
  dgate = d * u * (s * (1.f + g * (1.f - s)));
}

template <class T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dh, const T* gate, const T* up, int64_t n) {
  constexpr int V = kPack16<T>;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * V;
  if (i + V <= n) {
    const Pack16<T> d = load_pack<Pack16<T>>(dh + i), g = load_pack<Pack16<T>>(gate + i),
                    u = load_pack<Pack16<T>>(up + i);
    Pack16<T> dg, du;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      float a, b;
      swiglu_grad(to_float(d.v[k]), to_float(g.v[k]), to_float(u.v[k]), a, b);
      dg.v[k] = from_float<T>(a);
      du.v[k] = from_float<T>(b);
    }
    store_pack(dgate + i, dg);
    store_pack(dup + i, du);
  } else {
    for (int64_t j = i; j < n; ++j) {
      float a, b;
      swiglu_grad(to_float(dh[j]), to_float(gate[j]), to_float(up[j]), a, b);
      dgate[j] = from_float<T>(a);
      dup[j] = from_float<T>(b);
    }
  }
}

constexpr int kThreads = 256;

template <class T>
int64_t blocks_for(int64_t n) {
  const int64_t packs = (n + kPack16<T> - 1) / kPack16<T>;
  return (packs + kThreads - 1) / kThreads;
}

template <class T>
cudaError_t forward_impl(T* h, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n <= 0 || blocks_for<T>(n) > 0x7fffffff || !aligned16(h) || !aligned16(gate) || !aligned16(up))
    return cudaErrorInvalidValue;
  swiglu_forward_kernel<T><<<static_cast<unsigned>(blocks_for<T>(n)), kThreads, 0, stream>>>(h, gate, up, n);
  return cudaGetLastError();
}

template <class T>
cudaError_t backward_impl(T* dgate, T* dup, const T* dh, const T* gate, const T* up, int64_t n, cudaStream_t stream) {
  if (n <= 0 || blocks_for<T>(n) > 0x7fffffff || !aligned16(dgate) || !aligned16(dup) || !aligned16(dh) ||
      !aligned16(gate) || !aligned16(up))
    return cudaErrorInvalidValue;
  swiglu_backward_kernel<T><<<static_cast<unsigned>(blocks_for<T>(n)), kThreads, 0, stream>>>(dgate, dup, dh, gate, up, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t swiglu_forward(float* h, const float* gate, const float* up, int64_t n, cudaStream_t stream) {
  return forward_impl(h, gate, up, n, stream);
}
cudaError_t swiglu_forward(__nv_bfloat16* h, const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t n,
                           cudaStream_t stream) {
  return forward_impl(h, gate, up, n, stream);
}
cudaError_t swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, int64_t n,
                            cudaStream_t stream) {
  return backward_impl(dgate, dup, dh, gate, up, n, stream);
}
cudaError_t swiglu_backward(__nv_bfloat16* dgate, __nv_bfloat16* dup, const __nv_bfloat16* dh,
                            const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t n, cudaStream_t stream) {
  return backward_impl(dgate, dup, dh, gate, up, n, stream);
}

}  // namespace qft::kernels
