// NF4 4-bit weight quantization with bitsandbytes' exact layout and rounding (formats.md §4), the CPU
// reference of QLoRA's `load_in_4bit`: quantize a bf16 weight at load, dequantize it (here, or with the
// CUDA kernel kernels/nf4.cu) into a bf16 buffer before the GEMM.
//
// Layout, as bitsandbytes.functional.quantize_4bit(quant_type="nf4", compress_statistics=True) writes it:
//  - packed[j] = q[2j] << 4 | q[2j+1]: two 4-bit code-book indices per byte, the first element in the
//    high nibble; an odd element count pads the last low nibble with the code of 0.0 (7).
//  - absmax[b] = max |x| over block b of `blocksize` (64) consecutive elements, fp32; q = the NF4 index
//    nearest to x * (1/absmax[b]) (bitsandbytes' threshold tree, fp32 reciprocal multiply).
//  - double quantization: offset = mean(absmax); absmax - offset is quantized blockwise (blocksize 256)
//    to 8-bit indices into the signed dynamic map (kDynamicMap) with bitsandbytes' binary search,
//    absmax2[c] = max |absmax - offset| over chunk c. Dequantized: absmax[b] = map[q] * absmax2[b/256] + offset.
//  - dequantized weight: bf16(NF4[q] * absmax[b]), one fp32 product rounded to nearest even.
// Checked against bitsandbytes 0.50.2 on an H200 (kernels/dev/nf4_check.cu + nf4_bnb_dump.py, docs/PERF.md):
// packed bytes, plain absmax and dequantized values equal on every case. One known difference: bitsandbytes'
// CUDA library is built with --use_fast_math, so its 1/absmax2 in the double quantization is the hardware's
// approximate reciprocal (rcp.approx, within 1 ulp) where this file divides exactly; an absmax whose scaled
// value lies within an ulp of a midpoint of the 8-bit map can then get the neighbouring code (seen: 3 of
// 1280 blocks in 1 of 6 random tensors). The 4-bit path uses the same reciprocal, but there absmax is
// bf16-valued (8 significant bits) and its reciprocal rounded the same in every case checked.
// Plain C++ (no torch, no fmt) so that the CUDA check program can compile it with nvcc. Build it with
// -ffp-contract=off: a fused multiply-add in the absmax reconstruction would change the last bit.
#pragma once

#include <cstdint>
#include <vector>

namespace qft::model::nf4 {

// The 16 NF4 values, index = 4-bit code (formats.md §4.1).
extern const float kCodebook[16];
// bitsandbytes' create_dynamic_map(signed=True) as float32, sorted (256 values). Stored rather than
// computed: the map comes from torch.linspace in float32, whose last-bit rounding depends on torch's
// vectorised kernel; these are torch 2.11's values, which bitsandbytes stores as nested_quant_map.
extern const float kDynamicMap[256];

constexpr int kBlocksize = 64;
constexpr int kNestedBlocksize = 256;

struct Quantized {
  int64_t numel = 0;
  int blocksize = kBlocksize;
  std::vector<uint8_t> packed;  // (numel + 1) / 2 bytes
  std::vector<float> absmax;    // per block, fp32 (before double quantization)
  // Double quantization (empty when not used).
  bool nested = false;
  int nested_blocksize = kNestedBlocksize;
  std::vector<uint8_t> absmax_codes;  // per block, index into kDynamicMap
  std::vector<float> absmax2;         // per chunk of nested_blocksize blocks
  float offset = 0.f;
};

// bitsandbytes' dQuantizeNF4: the code of a value already scaled into [-1, 1] (NaN maps to 0, as there).
uint8_t nf4_code(float scaled);
// bitsandbytes' dQuantize<0> binary search over a sorted 256-entry map (value already scaled).
uint8_t dynamic_code(const float* map256, float scaled);

// Round an fp32 value to bf16 bits, to nearest even (NaN stays NaN); and back, exactly.
uint16_t float_to_bf16_bits(float x);
float bf16_bits_to_float(uint16_t bits);

// Quantize `numel` values (bf16 or fp32 inputs, widened to fp32 exactly). blocksize: a power of two in
// [32, 4096]. double_quant: quantize the absmax as above, with offset = mean(absmax) in double rounded
// to fp32 (torch's fp32 mean can differ in the last bit; quantize_absmax takes any offset).
Quantized quantize(const float* values, int64_t numel, bool double_quant, int blocksize = kBlocksize);
// The double-quantization step alone, for a given offset: fills q.nested, absmax_codes, absmax2, offset.
void quantize_absmax(Quantized& q, float offset, int nested_blocksize = kNestedBlocksize);

// The per-block absmax a dequantizer uses: q.absmax, or the double-quantized reconstruction.
std::vector<float> dequantize_absmax(const Quantized& q);
// The dequantized weight as bf16 bits (what bitsandbytes' dequantize_4bit returns for a bf16 weight),
// and the same values before rounding (fp32).
std::vector<uint16_t> dequantize_bf16(const Quantized& q);
std::vector<float> dequantize_float(const Quantized& q);

}  // namespace qft::model::nf4
