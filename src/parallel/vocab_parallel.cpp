#include "parallel/vocab_parallel.h"

#include <algorithm>

#include "core/error.h"
#include "model/ops/common.h"
#include "parallel/tp_mappings.h"

namespace qft::parallel {
namespace {

// Which of `ids` fall in the own range, and their row in the shard (0 where they do not).
struct LocalIds {
  at::Tensor owned;  // bool, shaped as ids
  at::Tensor row;    // int64, shaped as ids
};

LocalIds local_ids(const at::Tensor& ids, const VocabShard& shard) {
  LocalIds l;
  l.owned = (ids >= shard.begin) & (ids < shard.end);
  l.row = (ids - shard.begin).masked_fill_(l.owned.logical_not(), 0);
  return l;
}

void check_shard(const at::Tensor& W_shard, const VocabShard& shard, const char* what) {
  QFT_CHECK(W_shard.dim() == 2 && W_shard.size(0) == shard.size(),
            "{}: the shard of vocabulary rows [{}, {}) has {} rows", what, shard.begin, shard.end,
            W_shard.dim() == 2 ? W_shard.size(0) : 0);
}

}  // namespace

at::Tensor vocab_parallel_embedding_forward(const at::Tensor& W_shard, const VocabShard& shard, const at::Tensor& ids,
                                            Communicator& tp, bool sequence_parallel) {
  check_shard(W_shard, shard, "vocab-parallel embedding");
  const LocalIds l = local_ids(ids.reshape(-1), shard);
  at::Tensor rows = W_shard.index_select(0, l.row);
  rows.masked_fill_(l.owned.logical_not().unsqueeze(1), 0);
  return sequence_parallel ? reduce_scatter_to_sp_forward(rows, tp) : reduce_from_tp_forward(std::move(rows), tp);
}

void vocab_parallel_embedding_backward(const at::Tensor& dy, const VocabShard& shard, const at::Tensor& ids,
                                       at::Tensor& dW_shard, Communicator& tp, bool sequence_parallel) {
  check_shard(dW_shard, shard, "vocab-parallel embedding backward");
  const at::Tensor rows = dy.reshape({-1, dW_shard.size(1)});
  const at::Tensor d = sequence_parallel ? reduce_scatter_to_sp_backward(rows, tp) : reduce_from_tp_backward(rows);
  const LocalIds l = local_ids(ids.reshape(-1), shard);
  const at::Tensor n = l.owned.nonzero().squeeze(1);
  dW_shard.index_add_(0, l.row.index_select(0, n), d.index_select(0, n).to(dW_shard.scalar_type()));
}

model::ops::CrossEntropyResult vocab_parallel_cross_entropy(const at::Tensor& h, const at::Tensor& W_shard,
                                                            const VocabShard& shard,
                                                            const model::ops::LossTargets& targets,
                                                            int64_t chunk_tokens, double denominator, at::Tensor* dh,
                                                            at::Tensor* dW_shard, Communicator& tp) {
  using model::ops::acc_type;
  QFT_CHECK(chunk_tokens > 0, "loss_chunk_tokens must be positive, got {}", chunk_tokens);
  QFT_CHECK(denominator > 0, "loss_denominator must be positive, got {}", denominator);
  check_shard(W_shard, shard, "vocab-parallel cross-entropy");
  if (dh != nullptr) *dh = at::zeros_like(h);
  // Every rank has the same targets, so the same rows, chunks and collectives.
  const at::Tensor& rows = targets.rows;
  const at::Tensor& all_targets = targets.tokens;
  model::ops::CrossEntropyResult result;
  result.target_tokens = targets.count;

  const double inv = 1.0 / denominator;
  const at::ScalarType acc = acc_type(h.scalar_type());
  at::Tensor loss = at::zeros({}, h.options().dtype(acc));
  for (int64_t c0 = 0; c0 < result.target_tokens; c0 += chunk_tokens) {
    const int64_t n = std::min(chunk_tokens, result.target_tokens - c0);
    const at::Tensor idx = rows.narrow(0, c0, n);
    const LocalIds t = local_ids(all_targets.narrow(0, c0, n), shard);
    const at::Tensor col = t.row.unsqueeze(1);
    const at::Tensor hc = h.index_select(0, idx);
    const at::Tensor logits = at::mm(hc, W_shard.t());  // [n, V/T] in the compute dtype
    const at::Tensor logits_acc = logits.to(acc);
    // [own row log-sum-exp | own target logit or 0], gathered from every rank: [T, 2n].
    at::Tensor stats = at::empty({1, 2 * n}, logits_acc.options());
    stats.narrow(1, 0, n).copy_(at::logsumexp(logits_acc, 1).unsqueeze(0));
    const at::Tensor own_target_logit = logits_acc.gather(1, col).squeeze(1).masked_fill(t.owned.logical_not(), 0);
    stats.narrow(1, n, n).copy_(own_target_logit.unsqueeze(0));
    const at::Tensor gathered = all_gather_along(stats, 0, tp);
    const at::Tensor lse = at::logsumexp(gathered.narrow(1, 0, n), 0);  // [n]
    const at::Tensor logp_t = gathered.narrow(1, n, n).sum(0) - lse;    // [n]
    loss -= logp_t.sum();
    if (dh == nullptr && dW_shard == nullptr) continue;
    // softmax - onehot on the own columns, rounded once to the compute dtype.
    at::Tensor dlogits = (logits_acc - lse.unsqueeze(1)).exp_().to(logits.scalar_type());
    const at::Tensor target_value = at::where(t.owned, (logp_t.exp() - 1.0).to(dlogits.scalar_type()),
                                              dlogits.gather(1, col).squeeze(1));
    dlogits.scatter_(1, col, target_value.unsqueeze(1));
    if (dh != nullptr) dh->index_copy_(0, idx, at::mm(dlogits, W_shard).mul_(inv));
    if (dW_shard != nullptr) model::ops::accumulate(*dW_shard, at::mm(dlogits.t(), hc), inv);
  }
  if (dh != nullptr) *dh = copy_to_tp_backward(*dh, tp);
  result.loss_sum = loss;
  return result;
}

}  // namespace qft::parallel
