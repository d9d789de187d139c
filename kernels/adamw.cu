// AdamW over one flat fp32 buffer (params, grads, exp_avg, exp_avg_sq side by side in four buffers of
// n floats), with torch.optim.AdamW's update as src/train/adamw.cpp applies it per tensor:
//   p *= 1 - lr*wd                           (only where weight decay applies)
//   m = m + (1-beta1) * (g - m)              (torch's lerp with weight < 0.5)
//   v = v*beta2 + (1-beta2) * g*g
//   p += -step_size * m / (sqrt(v)/sqrt(bias_correction2) + eps),  step_size = lr / bias_correction1
// The scalars are computed on the host in double (adamw_scalars), as torch does, then passed as floats.
// Which elements decay is given by ranges: range r covers [range_end[r-1], range_end[r]) with flag
// range_decay[r]; a thread binary-searches the range of its first element (the table is small and stays
// in L1) and only looks again when its 4 elements straddle a boundary. Memory-bound: 28 bytes per element.
#include <cmath>

#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

__device__ __forceinline__ int find_range(const int64_t* range_end, int num_ranges, int64_t i) {
  int lo = 0, hi = num_ranges - 1;  // first r with range_end[r] > i
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (__ldg(range_end + mid) > i) hi = mid; else lo = mid + 1;
  }
  return lo;
}

__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, bool decay, const AdamWScalars& s) {
  if (decay) p *= s.decay_factor;
  m = m + s.one_minus_beta1 * (g - m);
  v = v * s.beta2 + s.one_minus_beta2 * (g * g);
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * (m / denom);
}

__global__ void adamw_kernel(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, int64_t n,
                             const int64_t* range_end, const uint8_t* range_decay, int num_ranges, AdamWScalars s) {
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= n) return;
  int r = find_range(range_end, num_ranges, i);
  if (i + 4 <= n) {
    float4 p = load_pack<float4>(params + i), m = load_pack<float4>(exp_avg + i), v = load_pack<float4>(exp_avg_sq + i);
    const float4 g = load_pack<float4>(grads + i);
    float* pp = &p.x; float* mp = &m.x; float* vp = &v.x; const float* gp = &g.x;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      while (__ldg(range_end + r) <= i + k) ++r;  // at most a few steps, only at a boundary
      adamw_element(pp[k], gp[k], mp[k], vp[k], __ldg(range_decay + r) != 0, s);
    }
    store_pack(params + i, p);
    store_pack(exp_avg + i, m);
    store_pack(exp_avg_sq + i, v);
  } else {
    for (int64_t j = i; j < n; ++j) {
      while (__ldg(range_end + r) <= j) ++r;
      adamw_element(params[j], grads[j], exp_avg[j], exp_avg_sq[j], __ldg(range_decay + r) != 0, s);
    }
  }
}

}  // namespace

AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  AdamWScalars s;
  s.decay_factor = static_cast<float>(1.0 - lr * weight_decay);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.neg_step_size = static_cast<float>(-(lr / bias_correction1));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  s.eps = static_cast<float>(eps);
  return s;
}

cudaError_t adamw_step(float* params, const float* grads, float* exp_avg, float* exp_avg_sq, int64_t n,
                       const int64_t* range_end, const uint8_t* range_decay, int num_ranges, const AdamWScalars& s,
                       cudaStream_t stream) {
  if (n <= 0 || num_ranges <= 0 || !aligned16(params) || !aligned16(grads) || !aligned16(exp_avg) ||
      !aligned16(exp_avg_sq))
    return cudaErrorInvalidValue;
  constexpr int kThreads = 256;
  const int64_t blocks = (n + 4 * kThreads - 1) / (4 * kThreads);
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  adamw_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(params, grads, exp_avg, exp_avg_sq, n, range_end,
                                                                       range_decay, num_ranges, s);
  return cudaGetLastError();
}

}  // namespace qft::kernels
