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

// [B, T, heads, D] memory seen as SDPA's [B, heads, T, D]: a view, no copy.
static at::Tensor bhsd_view(const at::Tensor& t) { return t.transpose(1, 2); }

at::Tensor cudnn_attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor* lse) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const int64_t T = q.size(1);
  auto [out, logsumexp, cum_q, cum_k, max_q, max_k, philox_seed, philox_offset, debug] =
      at::_scaled_dot_product_cudnn_attention(bhsd_view(q.contiguous()), bhsd_view(k.contiguous()),
                                              bhsd_view(v.contiguous()), std::nullopt, /*compute_log_sumexp=*/true,
                                              /*dropout_p=*/0.0, /*is_causal=*/true, /*return_debug_mask=*/false,
                                              scale);
  QFT_CHECK(out.size(2) == T, "cuDNN attention returned {} rows for {}", out.size(2), T);
  if (lse != nullptr) *lse = logsumexp;
  return out.transpose(1, 2).contiguous();
}

AttentionGrads cudnn_attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  const int64_t T = q.size(1);
  // Without attention dropout the RNG state is never read (ATen passes zeros then, as here).
  const at::Tensor no_rng = at::zeros({1}, q.options().dtype(at::kLong));
  auto [dq, dk, dv] = at::_scaled_dot_product_cudnn_attention_backward(
      bhsd_view(dout.contiguous()), bhsd_view(q.contiguous()), bhsd_view(k.contiguous()),
      bhsd_view(v.contiguous()), bhsd_view(out.contiguous()), lse, no_rng, no_rng, at::Tensor(), at::Tensor(),
      at::Tensor(), T, T, /*dropout_p=*/0.0, /*is_causal=*/true, scale);
  return {dq.transpose(1, 2).contiguous(), dk.transpose(1, 2).contiguous(), dv.transpose(1, 2).contiguous()};
}

}  // namespace qft::model::ops
