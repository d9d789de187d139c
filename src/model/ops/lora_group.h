// Projections that read one input x (a decoder layer's q/k/v, or gate/up: InputGroup in projection.h),
// each y_i = x W_i^T plus its LoRA branch, with the A factors of the adapted members stacked into one
// [sum of r, in] tensor (LoraCompute makes it once per step). Every rank-r step that reads x or makes
// dx is then one GEMM for the whole group instead of one per projection; the math is that of
// ops::linear_forward/backward on each member:
//   forward:  xa = x A_stacked^T [N, sum r], member i's x A_i^T being its column block;
//             y_i = (xa_i s_i) B_i^T, then y_i += x W_i^T (beta = 1, as linear_forward).
//   backward: da_i = s_i dy_i B_i, written into the column blocks of da [N, sum r] (each its own dy);
//             dA = da^T x: one GEMM, each row block added to its member's fp32 gradient;
//             dx = da A_stacked: one GEMM, onto which every member's dy_i W_i accumulates (beta = 1), so
//             the group's input gradient needs no separate additions; dB_i = s_i dy_i^T xa_i per member.
// With LoRA dropout (PEFT draws each projection's mask on its own) the members no longer read one input:
// they run one by one through linear_forward/backward, whose masking is the tested reference, as they do
// when the group has no stacked A. Without any LoRA member the base input gradients still accumulate
// into one dx.
#pragma once

#include <vector>

#include <ATen/ATen.h>

#include "model/linear.h"
#include "model/ops/linear.h"

namespace qft::model::ops {

struct LinearGroup {
  std::vector<const Linear*> members;  // all reading the same x
  // The A of the members with LoRA stacked in member order, in the compute dtype; each such member's
  // LoraBranch::A must be its row block (a view). Undefined: each member computes its own x A^T.
  at::Tensor stacked_A;
};

// ys[i] = members[i](x). When `xa` is given (one slot per member), each LoRA member's x A^T [N, r] is
// saved in its slot for backward.
std::vector<at::Tensor> lora_group_forward(const LinearGroup& group, const at::Tensor& x,
                                           const std::vector<at::Tensor*>* xa);

// dx = the sum over members of their input gradients for dy[i] (undefined when !need_dx); accumulates
// each member's requested weight gradients (grads[i]; its need_dx is not read). xa as forward saved it.
at::Tensor lora_group_backward(const LinearGroup& group, const std::vector<at::Tensor>& dy, const at::Tensor& x,
                               const std::vector<at::Tensor>& xa, const std::vector<LinearGrads>& grads,
                               bool need_dx);

}  // namespace qft::model::ops
