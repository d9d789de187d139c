#include <cmath>

#include "core/error.h"
#include "model/ops/attention.h"

// FlashAttention-2 through ATen's varlen entry points: every packed sequence is causal on its own,
// GQA is native (nH a multiple of nKV), and only the row log-sum-exp is saved, as in the math path.
namespace qft::model::ops {

at::Tensor flash_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                   const at::Tensor& cu_seqlens, int64_t max_seqlen, at::Tensor* lse) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  auto [out, logsumexp, philox_seed, philox_offset, debug] = at::_flash_attention_forward(
      q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens, cu_seqlens, max_seqlen, max_seqlen,
      /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false, scale);
  if (lse != nullptr) *lse = logsumexp;
  return out;
}

AttentionGrads flash_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                        const at::Tensor& cu_seqlens, int64_t max_seqlen) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  // Without attention dropout the RNG state is never read.
  const at::Tensor no_rng = at::zeros({2}, q.options().dtype(at::kLong));
  auto [dq, dk, dv] = at::_flash_attention_backward(dout.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
                                                    out.contiguous(), lse, cu_seqlens, cu_seqlens, max_seqlen,
                                                    max_seqlen, /*dropout_p=*/0.0, /*is_causal=*/true, no_rng,
                                                    no_rng, scale);
  return {dq, dk, dv};
}

}  // namespace qft::model::ops
