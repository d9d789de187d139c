#include "model/ops/lora_group.h"

#include "core/error.h"
#include "model/ops/common.h"

namespace qft::model::ops {
namespace {

// True when the members share x itself: no LoRA dropout, and a stacked A covering the adapted members.
bool reads_one_input(const LinearGroup& group) {
  bool adapted = false;
  for (const Linear* linear : group.members) {
    if (!linear->lora) continue;
    adapted = true;
    if (linear->lora->dropout > 0.0) return false;
  }
  return !adapted || group.stacked_A.defined();
}

// The stacked A holds exactly the adapted members' A, in order, in x's dtype (their B too).
void check_stack(const LinearGroup& group, const at::Tensor& x) {
  const at::Tensor& stacked = group.stacked_A;
  int64_t row = 0;
  for (const Linear* linear : group.members) {
    if (!linear->lora) continue;
    const LoraBranch& lora = *linear->lora;
    const char* name = linear->info().name;
    QFT_CHECK(stacked.defined(), "{}: has LoRA but its group has no stacked A", name);
    QFT_CHECK(lora.A.is_alias_of(stacked) && lora.A.dim() == 2 && lora.A.size(1) == stacked.size(1) &&
                  lora.A.storage_offset() == stacked.storage_offset() + row * stacked.stride(0) &&
                  lora.A.is_contiguous(),
              "{}: its LoRA A is not rows {}.. of its group's stacked A (LoraCompute makes both)", name, row);
    QFT_CHECK(lora.B.scalar_type() == x.scalar_type(), "{}: LoRA B is {} but the activations {}", name,
              c10::toString(lora.B.scalar_type()), c10::toString(x.scalar_type()));
    row += lora.A.size(0);
  }
  if (!stacked.defined()) return;
  QFT_CHECK(stacked.size(0) == row, "the stacked LoRA A has {} rows, its group's adapted members {}", stacked.size(0),
            row);
  QFT_CHECK(stacked.scalar_type() == x.scalar_type(), "the stacked LoRA A is {} but the activations {}",
            c10::toString(stacked.scalar_type()), c10::toString(x.scalar_type()));
}

}  // namespace

std::vector<at::Tensor> lora_group_forward(const LinearGroup& group, const at::Tensor& x,
                                           const std::vector<at::Tensor*>* xa) {
  const size_t n = group.members.size();
  QFT_CHECK(xa == nullptr || xa->size() == n, "lora_group_forward: {} members, {} xa slots", n, xa->size());
  std::vector<at::Tensor> ys(n);
  if (!reads_one_input(group)) {
    for (size_t i = 0; i < n; ++i) ys[i] = linear_forward(*group.members[i], x, xa != nullptr ? (*xa)[i] : nullptr);
    return ys;
  }
  check_stack(group, x);
  // x A^T of every adapted member at once.
  const at::Tensor xa_all = group.stacked_A.defined() ? at::mm(x, group.stacked_A.t()) : at::Tensor();  // [N, sum r]
  int64_t col = 0;
  for (size_t i = 0; i < n; ++i) {
    const Linear& linear = *group.members[i];
    // Used before the next member's dense(): a packed storage's buffer may be shared.
    const at::Tensor W = linear.weight->dense();
    if (!linear.lora) {
      ys[i] = at::mm(x, W.t());
      continue;
    }
    const LoraBranch& lora = *linear.lora;
    const at::Tensor a = xa_all.narrow(1, col, lora.A.size(0));  // [N, r], row stride sum r
    col += lora.A.size(0);
    // As linear_forward: the rank-r product writes y, the compute-bound base GEMM adds onto it.
    ys[i] = at::mm(a * lora.scaling, lora.B.t());
    ys[i].addmm_(x, W.t());
    if (xa != nullptr && (*xa)[i] != nullptr) *(*xa)[i] = a;
  }
  return ys;
}

at::Tensor lora_group_backward(const LinearGroup& group, const std::vector<at::Tensor>& dy, const at::Tensor& x,
                               const std::vector<at::Tensor>& xa, const std::vector<LinearGrads>& grads,
                               bool need_dx) {
  const size_t n = group.members.size();
  QFT_CHECK(dy.size() == n && xa.size() == n && grads.size() == n,
            "lora_group_backward: {} members, {} dy, {} xa, {} gradient sets", n, dy.size(), xa.size(), grads.size());
  if (!reads_one_input(group)) {
    at::Tensor dx;
    for (size_t i = 0; i < n; ++i) {
      LinearGrads g = grads[i];
      g.need_dx = need_dx;
      const at::Tensor dx_i = linear_backward(*group.members[i], dy[i], x, xa[i], g);
      if (need_dx) dx = dx.defined() ? dx.add_(dx_i) : dx_i;
    }
    return dx;
  }
  check_stack(group, x);

  // Trained base weights (full fine-tuning).
  for (size_t i = 0; i < n; ++i)
    if (grads[i].dW != nullptr) accumulate(*grads[i].dW, at::mm(dy[i].t(), x));

  at::Tensor dx;
  if (group.stacked_A.defined()) {
    // Per member, from its own dy: dB, and da = s dy B into the member's column block of da.
    bool want_dA = false;
    for (size_t i = 0; i < n; ++i) want_dA = want_dA || (group.members[i]->lora && grads[i].dA != nullptr);
    const int64_t R = group.stacked_A.size(0);
    const at::Tensor da = want_dA || need_dx ? at::empty({x.size(0), R}, x.options()) : at::Tensor();  // [N, sum r]
    int64_t col = 0;
    for (size_t i = 0; i < n; ++i) {
      if (!group.members[i]->lora) continue;
      const LoraBranch& lora = *group.members[i]->lora;
      const int64_t r = lora.A.size(0);
      // y += s * a B^T with a = x A^T: the scaling is applied on the small [N, r] side.
      if (grads[i].dB != nullptr) accumulate(*grads[i].dB, at::mm(dy[i].t(), xa[i]), lora.scaling);
      if (da.defined()) {
        at::Tensor block = da.narrow(1, col, r);
        at::mm_out(block, dy[i], lora.B).mul_(lora.scaling);
      }
      col += r;
    }
    if (want_dA) {
      // Every member's dA in one GEMM, cast once to the gradients' dtype, then added block by block.
      at::ScalarType grad_dtype = at::kFloat;
      for (size_t i = 0; i < n; ++i)
        if (group.members[i]->lora && grads[i].dA != nullptr) grad_dtype = grads[i].dA->scalar_type();
      const at::Tensor dA_all = at::mm(da.t(), x).to(grad_dtype);  // [sum r, in]
      int64_t row = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!group.members[i]->lora) continue;
        const int64_t r = group.members[i]->lora->A.size(0);
        if (grads[i].dA != nullptr) accumulate(*grads[i].dA, dA_all.narrow(0, row, r));
        row += r;
      }
    }
    // The LoRA part of every member's dx in one GEMM; the base GEMMs below add onto it.
    if (need_dx) dx = at::mm(da, group.stacked_A);
  }
  if (!need_dx) return at::Tensor();
  for (size_t i = 0; i < n; ++i) {
    // Only dx needs the base weight; a packed storage dequantizes it here again (as linear_backward).
    const at::Tensor W = group.members[i]->weight->dense();
    if (dx.defined())
      dx.addmm_(dy[i], W);
    else
      dx = at::mm(dy[i], W);
  }
  return dx;
}

}  // namespace qft::model::ops
