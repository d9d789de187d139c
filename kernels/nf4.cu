// NF4 dequantization into a caller-given bf16 buffer (QLoRA: dequantize one layer's weight, then cuBLAS),
// bit-exact with src/model/nf4.cpp and bitsandbytes' dequantize_4bit: absmax[b] is rebuilt as
// map[code] * absmax2[b/256] + offset (two roundings, no FMA, as bitsandbytes' two separate ops), and each
// weight is bf16(NF4[q] * absmax[b]). Memory-bound: 0.5 byte in, 2 bytes out per element; each thread
// takes 8 packed bytes (16 elements, inside one block since blocksize >= 32) and writes two 16-byte packs.
#include "common.cuh"
#include "qft_kernels.h"

namespace qft::kernels {
namespace {

__constant__ float kNf4Codebook[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
    -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
    0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
    1.0f};

constexpr int kThreads = 256;

__device__ __forceinline__ float block_absmax(int64_t b, const uint8_t* absmax_codes, const float* absmax2,
                                              const float* code2, float offset, int nested_shift, const float* absmax) {
  if (absmax_codes == nullptr) return __ldg(absmax + b);
  return __fadd_rn(__fmul_rn(__ldg(code2 + absmax_codes[b]), __ldg(absmax2 + (b >> nested_shift))), offset);
}

// absmax_codes == nullptr: plain fp32 absmax (no double quantization).
__global__ void nf4_dequantize_kernel(__nv_bfloat16* out, const uint8_t* packed, const uint8_t* absmax_codes,
                                      const float* absmax2, const float* code2, float offset, const float* absmax,
                                      int64_t n, int block_shift, int nested_shift) {
  __shared__ float codebook[16];
  if (threadIdx.x < 16) codebook[threadIdx.x] = kNf4Codebook[threadIdx.x];
  __syncthreads();
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 16;
  if (i >= n) return;
  const float scale = block_absmax(i >> block_shift, absmax_codes, absmax2, code2, offset, nested_shift, absmax);
  if (i + 16 <= n) {
    const uint2 bytes = load_pack<uint2>(packed + i / 2);
    Pack<__nv_bfloat16, 8> lo, hi;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint32_t b0 = (bytes.x >> (8 * k)) & 0xffu, b1 = (bytes.y >> (8 * k)) & 0xffu;
      lo.v[2 * k] = __float2bfloat16_rn(codebook[b0 >> 4] * scale);
      lo.v[2 * k + 1] = __float2bfloat16_rn(codebook[b0 & 15u] * scale);
      hi.v[2 * k] = __float2bfloat16_rn(codebook[b1 >> 4] * scale);
      hi.v[2 * k + 1] = __float2bfloat16_rn(codebook[b1 & 15u] * scale);
    }
    store_pack(out + i, lo);
    store_pack(out + i + 8, hi);
  } else {
    for (int64_t j = i; j < n; ++j) {
      const uint8_t byte = packed[j / 2];
      out[j] = __float2bfloat16_rn(codebook[j % 2 == 0 ? byte >> 4 : byte & 15] * scale);
    }
  }
}

int log2_exact(int v) {  // -1 unless v is a power of two
  if (v <= 0 || (v & (v - 1)) != 0) return -1;
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

cudaError_t launch(__nv_bfloat16* out, const uint8_t* packed, const uint8_t* absmax_codes, const float* absmax2,
                   const float* code2, float offset, const float* absmax, int64_t n, int blocksize,
                   int nested_blocksize, cudaStream_t stream) {
  const int block_shift = log2_exact(blocksize), nested_shift = absmax_codes ? log2_exact(nested_blocksize) : 0;
  if (n <= 0 || block_shift < 5 || nested_shift < 0 || !aligned16(out) || (reinterpret_cast<uintptr_t>(packed) & 7u))
    return cudaErrorInvalidValue;
  const int64_t blocks = (n + 16 * kThreads - 1) / (16 * kThreads);
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  nf4_dequantize_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      out, packed, absmax_codes, absmax2, code2, offset, absmax, n, block_shift, nested_shift);
  return cudaGetLastError();
}

}  // namespace

cudaError_t nf4_dequantize(__nv_bfloat16* out, const uint8_t* packed, const uint8_t* absmax_codes,
                           const float* absmax2, const float* code2, float offset, int64_t n, int blocksize,
                           int nested_blocksize, cudaStream_t stream) {
  if (absmax_codes == nullptr || absmax2 == nullptr || code2 == nullptr) return cudaErrorInvalidValue;
  return launch(out, packed, absmax_codes, absmax2, code2, offset, nullptr, n, blocksize, nested_blocksize, stream);
}

cudaError_t nf4_dequantize_plain(__nv_bfloat16* out, const uint8_t* packed, const float* absmax, int64_t n,
                                 int blocksize, cudaStream_t stream) {
  if (absmax == nullptr) return cudaErrorInvalidValue;
  return launch(out, packed, nullptr, nullptr, nullptr, 0.f, absmax, n, blocksize, 0, stream);
}

}  // namespace qft::kernels
