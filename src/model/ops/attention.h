// Causal self-attention with GQA and packed segments, as an explicit forward and backward.
//
// This is the math path (scores materialised per layer, softmax in fp32); it runs on CPU and GPU.
// The forward saves only the output and the per-row log-sum-exp, the same contract as flash
// attention, so a fused kernel can replace both functions without touching their callers.
#pragma once

#include <string>

#include <ATen/ATen.h>

namespace qft::model::ops {

// How one micro-batch's rows are split into sequences, built once and shared by every layer. The
// math path reads `mask`; the flash path (CUDA, bf16/fp16) reads the packed-sequence offsets.
struct AttentionLayout {
  bool flash = false;
  at::Tensor mask;        // math: bool [B|1, T, T], from attention_mask
  at::Tensor cu_seqlens;  // flash: int32 [S+1], offsets of the S sequences in the flattened B*T rows
  int64_t max_seqlen = 0;
  // Flash path where every row is one whole sequence (no packing, no padding) and the fused kernels are
  // on: cuDNN's dense causal attention, about 2x FlashAttention-2 on H200 (docs/PERF.md). Its variable-
  // length form is not used: in ATen 2.11 it gave wrong gradients for packed sequences there.
  bool cudnn = false;
};

// Picks the path: flash when `device` is CUDA, `dtype` is bf16/fp16, D is a multiple of 8 up to 256,
// and `allow_flash`. Sequences are maximal runs of equal segment id within a row (samples are
// packed contiguously); a padding run (-1) becomes a sequence of its own, which only pads attend to.
// Host segment ids (or none) cost no synchronisation with the GPU; device ones are copied to the host.
AttentionLayout attention_layout(const at::Tensor& segment_ids, int64_t B, int64_t T, int64_t D, at::Device device,
                                 at::ScalarType dtype, bool allow_flash = true);

// Which keys each query may see: causal, within its own sample (a run of equal segment ids), never
// padding (segment -1). segment_ids [B, T] int64 or undefined (one causal sequence per row).
// Returns bool [B|1, T, T].
at::Tensor attention_mask(const at::Tensor& segment_ids, int64_t T, at::Device device);

// q [B, T, nH, D], k/v [B, T, nKV, D] (query head j reads kv head j / (nH/nKV)), mask from
// attention_mask. Returns out [B, T, nH, D]; *lse = log-sum-exp of each row of scaled scores
// [B, nH, T] in the accumulation dtype (+inf for rows that see nothing: their output is 0).
at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                             at::Tensor* lse);

struct AttentionGrads {
  at::Tensor dq, dk, dv;  // shaped as q, k, v
};
AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                  const at::Tensor& mask);

// The same contract over an AttentionLayout: q [B, T, nH, D], k/v [B, T, nKV, D]; *lse's shape
// depends on the path (math: [B, nH, T]; flash: [nH, B*T]) and is only for attention_backward.
at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionLayout& layout, at::Tensor* lse);
AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                  const AttentionLayout& layout);

// False once cuDNN's attention has refused a call in this process (it warns once; FlashAttention-2 runs then).
bool cudnn_attention_usable();
void disable_cudnn_attention(const std::string& why);

// cuDNN's causal attention (attention_flash.cpp), one sequence per row: q [B, T, nH, D], k/v [B, T, nKV, D];
// *lse is cuDNN's row statistics, only for cudnn_attention_backward.
at::Tensor cudnn_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor* lse);
AttentionGrads cudnn_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse);

// The flash path alone (attention_flash.cpp): flattened rows, q [N, nH, D], k/v [N, nKV, D].
at::Tensor flash_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& cu_seqlens, int64_t max_seqlen, at::Tensor* lse);
AttentionGrads flash_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                        const at::Tensor& cu_seqlens, int64_t max_seqlen);

}  // namespace qft::model::ops
