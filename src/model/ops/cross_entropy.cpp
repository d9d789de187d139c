#include "model/ops/cross_entropy.h"

#include <algorithm>

#include "core/error.h"
#include "model/ops/common.h"
#include "model/ops/fused_kernels.h"

namespace qft::model::ops {
namespace {

// log_softmax in the accumulation dtype. CUDA reads fp16 logits directly (its only half_to_float
// mode); other low-precision logits are upcast first.
at::Tensor log_softmax_acc(const at::Tensor& logits) {
  const at::ScalarType t = logits.scalar_type();
  if (t == acc_type(t)) return at::_log_softmax(logits, 1, false);
  if (logits.is_cuda() && t == at::kHalf) return at::_log_softmax(logits, 1, /*half_to_float=*/true);
  return at::_log_softmax(logits.to(acc_type(t)), 1, false);
}

}  // namespace

at::Tensor shift_targets(const at::Tensor& labels, const at::Tensor& segment_ids) {
  const int64_t B = labels.size(0), T = labels.size(1);
  at::Tensor targets = at::full({B, T}, -100, labels.options().dtype(at::kLong));
  if (T > 1) {
    at::Tensor next = labels.narrow(1, 1, T - 1).to(at::kLong);
    if (segment_ids.defined()) {
      const at::Tensor seg = segment_ids.to(labels.device());
      const at::Tensor same = (seg.narrow(1, 0, T - 1) == seg.narrow(1, 1, T - 1)) & (seg.narrow(1, 0, T - 1) >= 0);
      next = next.masked_fill(same.logical_not(), -100);
    }
    targets.narrow(1, 0, T - 1).copy_(next);
  }
  return targets.reshape({-1});
}

LossTargets loss_targets(const at::Tensor& labels, const at::Tensor& segment_ids, int64_t vocab_size,
                         at::Device device) {
  return loss_targets_of_shifted(
      shift_targets(labels.to(at::kCPU), segment_ids.defined() ? segment_ids.to(at::kCPU) : at::Tensor()), vocab_size,
      device);
}

LossTargets loss_targets_of_shifted(const at::Tensor& targets, int64_t vocab_size, at::Device device) {
  const at::Tensor shifted = targets.to(at::kCPU, at::kLong).reshape({-1});
  const at::Tensor rows = (shifted != -100).nonzero().squeeze(1);
  LossTargets out;
  out.count = rows.size(0);
  const at::Tensor tokens = shifted.index_select(0, rows);
  if (out.count > 0) {
    const auto [min_t, max_t] = at::aminmax(tokens);
    const int64_t lo = min_t.item<int64_t>(), hi = max_t.item<int64_t>();
    QFT_CHECK(lo >= 0 && hi < vocab_size, "labels must be -100 or in [0, {}), got values in [{}, {}]", vocab_size, lo,
              hi);
  }
  out.rows = host_to_device(rows, device);
  out.tokens = host_to_device(tokens, device);
  return out;
}

CrossEntropyResult lm_head_cross_entropy(const at::Tensor& h, const at::Tensor& W, const LossTargets& targets,
                                         int64_t chunk_tokens, double denominator, at::Tensor* dh, at::Tensor* dW) {
  QFT_CHECK(chunk_tokens > 0, "loss_chunk_tokens must be positive, got {}", chunk_tokens);
  QFT_CHECK(denominator > 0, "loss_denominator must be positive, got {}", denominator);
  if (dh != nullptr) *dh = at::zeros_like(h);
  const at::Tensor& rows = targets.rows;
  const at::Tensor& all_targets = targets.tokens;
  CrossEntropyResult result;
  result.target_tokens = targets.count;
  at::Tensor loss = at::zeros({}, h.options().dtype(acc_type(h.scalar_type())));
  const double inv = 1.0 / denominator;
  for (int64_t c0 = 0; c0 < result.target_tokens; c0 += chunk_tokens) {
    const int64_t n = std::min(chunk_tokens, result.target_tokens - c0);
    const at::Tensor idx = rows.narrow(0, c0, n);
    const at::Tensor tgt = all_targets.narrow(0, c0, n).unsqueeze(1);
    const at::Tensor hc = h.index_select(0, idx);
    at::Tensor logits = at::mm(hc, W.t());  // [n, V] in the compute dtype, as transformers' lm_head
    // CUDA: one kernel turns the logits into (softmax - onehot) / denominator in place, with the losses.
    at::Tensor chunk_losses;
    if (fused::cross_entropy_in_place(logits, &chunk_losses, all_targets.narrow(0, c0, n), inv)) {
      loss += chunk_losses.sum();
      if (dh != nullptr) dh->index_copy_(0, idx, at::mm(logits, W));
      if (dW != nullptr) accumulate(*dW, at::mm(logits.t(), hc));
      continue;
    }
    const at::Tensor logp = log_softmax_acc(logits);
    const at::Tensor logp_t = logp.gather(1, tgt);
    loss -= logp_t.sum();
    if (dh == nullptr && dW == nullptr) continue;
    // d(-log softmax[t]) / dlogits = softmax - onehot, rounded once to the compute dtype as autograd
    // does: softmax is written straight in that dtype, the target column from the fp32 log-prob.
    at::Tensor dlogits = at::_softmax(logits, 1, /*half_to_float=*/false);
    dlogits.scatter_(1, tgt, (logp_t.exp() - 1.0).to(dlogits.scalar_type()));
    if (dh != nullptr) dh->index_copy_(0, idx, at::mm(dlogits, W).mul_(inv));
    if (dW != nullptr) accumulate(*dW, at::mm(dlogits.t(), hc), inv);
  }
  result.loss_sum = loss;
  return result;
}

}  // namespace qft::model::ops
