#include "model/ops/attention.h"

#include <atomic>
#include <cmath>
#include <limits>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "model/ops/common.h"
#include "model/ops/fused_kernels.h"

namespace qft::model::ops {
namespace {

// Layout used inside: queries grouped by their kv head, [B, nKV, R*T, D] with R = nH/nKV, so that one
// batched GEMM against k [B, nKV, T, D] serves all R query heads that share it (no repeat_kv copy).
struct Dims {
  int64_t B, T, nH, nKV, D, R;
};

Dims dims_of(const at::Tensor& q, const at::Tensor& k) {
  Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), 0};
  QFT_CHECK(d.nH % d.nKV == 0, "attention: {} query heads are not a multiple of {} kv heads", d.nH, d.nKV);
  d.R = d.nH / d.nKV;
  return d;
}

// [B, T, nH, D] -> [B, nKV, R*T, D]; head j = g*R + r lands in group g, rows r*T .. r*T+T-1.
at::Tensor group_queries(const at::Tensor& x, const Dims& d) {
  return x.permute({0, 2, 1, 3}).reshape({d.B, d.nKV, d.R * d.T, d.D});
}
at::Tensor ungroup_queries(const at::Tensor& x, const Dims& d) {
  return x.view({d.B, d.nH, d.T, d.D}).permute({0, 2, 1, 3}).contiguous();
}
at::Tensor heads_first(const at::Tensor& x) { return x.permute({0, 2, 1, 3}); }  // [B,T,h,D] -> [B,h,T,D]

// Scaled, masked scores in the accumulation dtype: [B, nKV, R, T, T].
at::Tensor scores(const at::Tensor& qg, const at::Tensor& kh, const at::Tensor& mask, const Dims& d) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  at::Tensor s = to_acc(at::matmul(qg, kh.transpose(-1, -2))).mul_(scale).view({d.B, d.nKV, d.R, d.T, d.T});
  const at::Tensor allowed = mask.view({mask.size(0), 1, 1, d.T, d.T});
  return s.masked_fill_(allowed.logical_not(), -std::numeric_limits<double>::infinity());
}

// bool [B, T]: where a new sample starts, i.e. the first position of each run of equal segment ids
// (an id reused later in the row starts a new sample rather than joining the earlier one).
at::Tensor sample_starts(const at::Tensor& seg) {
  const int64_t T = seg.size(1);
  at::Tensor starts = at::ones(seg.sizes(), seg.options().dtype(at::kBool));
  if (T > 1) starts.narrow(1, 1, T - 1).copy_(seg.narrow(1, 1, T - 1) != seg.narrow(1, 0, T - 1));
  return starts;
}

}  // namespace

at::Tensor attention_mask(const at::Tensor& segment_ids, int64_t T, at::Device device) {
  const auto opts = at::TensorOptions().device(device);
  const at::Tensor pos = at::arange(T, opts.dtype(at::kLong));
  at::Tensor causal = pos.unsqueeze(1) >= pos.unsqueeze(0);  // [T(query), T(key)]
  if (!segment_ids.defined()) return causal.unsqueeze(0);
  const at::Tensor seg = segment_ids.to(device, at::kLong);
  // A sample is a run of equal ids, as in the flash layout.
  const at::Tensor run = sample_starts(seg).cumsum(1, at::kLong);
  const at::Tensor same = run.unsqueeze(2) == run.unsqueeze(1);  // [B, T, T]
  const at::Tensor real = (seg >= 0).unsqueeze(2);
  return causal.unsqueeze(0) & same & real;
}

at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                             at::Tensor* lse) {
  const Dims d = dims_of(q, k);
  const double inf = std::numeric_limits<double>::infinity();
  const at::Tensor qg = group_queries(q, d), kh = heads_first(k), vh = heads_first(v);
  const at::Tensor s = scores(qg, kh, mask, d);
  // A row that sees no key has max -inf; shifting it by 0 keeps exp() finite, and lse = +inf then
  // makes its probabilities exactly 0 instead of NaN.
  at::Tensor m = s.amax(-1, /*keepdim=*/true);
  m = m.masked_fill(m.isinf(), 0.0);
  const at::Tensor sum = (s - m).exp_().sum(-1, /*keepdim=*/true);
  const at::Tensor l = (m + sum.log()).masked_fill_(sum == 0, inf);  // [B, nKV, R, T, 1]
  const at::Tensor p = (s - l).exp_().to(q.scalar_type());
  const at::Tensor o = at::matmul(p.view({d.B, d.nKV, d.R * d.T, d.T}), vh);
  if (lse != nullptr) *lse = l.view({d.B, d.nH, d.T});
  return ungroup_queries(o, d);
}

AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                  const at::Tensor& mask) {
  const Dims d = dims_of(q, k);
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.D));
  const at::ScalarType dt = q.scalar_type();
  const at::Tensor qg = group_queries(q, d), kh = heads_first(k), vh = heads_first(v);
  const at::Tensor dog = group_queries(dout, d);  // [B, nKV, R*T, D]

  // Probabilities recomputed from the saved log-sum-exp.
  const at::Tensor p = (scores(qg, kh, mask, d) - lse.view({d.B, d.nKV, d.R, d.T, 1})).exp_();
  const at::Tensor p_rows = p.view({d.B, d.nKV, d.R * d.T, d.T});

  // out = P v: dv sums over the R query heads sharing each kv head (they are rows of one GEMM).
  const at::Tensor dv = at::matmul(p_rows.to(dt).transpose(-1, -2), dog);  // [B, nKV, T, D]
  const at::Tensor dp = to_acc(at::matmul(dog, vh.transpose(-1, -2))).view({d.B, d.nKV, d.R, d.T, d.T});
  // Softmax backward: dS = P * (dP - rowsum(P*dP)); rowsum(P*dP) = rowsum(dout*out), which is cheaper.
  const at::Tensor delta = (to_acc(dout) * to_acc(out)).sum(-1);  // [B, T, nH]
  const at::Tensor delta_g = delta.permute({0, 2, 1}).reshape({d.B, d.nKV, d.R, d.T, 1});
  const at::Tensor ds = (p * (dp - delta_g)).mul_(scale).to(dt).view({d.B, d.nKV, d.R * d.T, d.T});

  AttentionGrads g;
  g.dq = ungroup_queries(at::matmul(ds, kh), d);
  g.dk = at::matmul(ds.transpose(-1, -2), qg).permute({0, 2, 1, 3}).contiguous();  // [B, T, nKV, D]
  g.dv = dv.permute({0, 2, 1, 3}).contiguous();
  return g;
}

namespace {
std::atomic<bool> g_cudnn_attention_usable{true};
}  // namespace

bool cudnn_attention_usable() { return g_cudnn_attention_usable; }

void disable_cudnn_attention(const std::string& why) {
  if (g_cudnn_attention_usable.exchange(false))
    spdlog::warn("cuDNN attention failed ({}); using FlashAttention-2 from now on", why.substr(0, 300));
}

AttentionLayout attention_layout(const at::Tensor& segment_ids, int64_t B, int64_t T, int64_t D, at::Device device,
                                 at::ScalarType dtype, bool allow_flash) {
  AttentionLayout layout;
  layout.flash = allow_flash && device.is_cuda() && (dtype == at::kBFloat16 || dtype == at::kHalf) && D % 8 == 0 &&
                 D <= 256;
  if (!layout.flash) {
    layout.mask = attention_mask(segment_ids, T, device);
    return layout;
  }
  // The sequence boundaries come from the host copy of the segment ids (the trainer's batches are on
  // the host): no synchronisation with the GPU for them or for the longest sequence.
  at::Tensor starts;  // flattened row index where each sequence begins
  if (segment_ids.defined()) {
    starts = sample_starts(segment_ids.to(at::kCPU, at::kLong)).reshape({-1}).nonzero().squeeze(1);
  } else {
    starts = at::arange(0, B * T, T, at::kLong);
  }
  const at::Tensor cu_seqlens = at::cat({starts, at::full({1}, B * T, at::kLong)}).to(at::kInt);
  layout.max_seqlen =
      (cu_seqlens.narrow(0, 1, starts.size(0)) - cu_seqlens.narrow(0, 0, starts.size(0))).max().item<int64_t>();
  layout.cu_seqlens = host_to_device(cu_seqlens, device);
  layout.cudnn = fused::enabled() && fused::compiled() && starts.size(0) == B && layout.max_seqlen == T;
  return layout;
}

at::Tensor attention_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionLayout& layout, at::Tensor* lse) {
  if (!layout.flash) return attention_forward(q, k, v, layout.mask, lse);
  if (layout.cudnn && cudnn_attention_usable()) {
    try {
      return cudnn_attention_forward(q, k, v, lse);
    } catch (const c10::Error& e) {
      // A shape or build cuDNN refuses: FlashAttention-2 from here on (backward tells the two apart by
      // the statistics' shape).
      disable_cudnn_attention(e.what_without_backtrace());
    }
  }
  const int64_t B = q.size(0), T = q.size(1);
  const at::Tensor o = flash_attention_forward(q.reshape({B * T, q.size(2), q.size(3)}),
                                               k.reshape({B * T, k.size(2), k.size(3)}),
                                               v.reshape({B * T, v.size(2), v.size(3)}), layout.cu_seqlens,
                                               layout.max_seqlen, lse);
  return o.view(q.sizes());
}

AttentionGrads attention_backward(const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k,
                                  const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
                                  const AttentionLayout& layout) {
  if (!layout.flash) return attention_backward(dout, q, k, v, out, lse, layout.mask);
  // cuDNN's statistics are [B, heads, T, 1]; FlashAttention-2's [heads, B*T].
  if (layout.cudnn && lse.dim() == 4) return cudnn_attention_backward(dout, q, k, v, out, lse);
  const int64_t B = q.size(0), T = q.size(1);
  auto flat = [&](const at::Tensor& t) { return t.reshape({B * T, t.size(2), t.size(3)}); };
  AttentionGrads g = flash_attention_backward(flat(dout), flat(q), flat(k), flat(v), flat(out), lse,
                                              layout.cu_seqlens, layout.max_seqlen);
  g.dq = g.dq.view(q.sizes());
  g.dk = g.dk.view(k.sizes());
  g.dv = g.dv.view(v.sizes());
  return g;
}

}  // namespace qft::model::ops
