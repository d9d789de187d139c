// Shared by the ops: the precision that reductions and softmax run in.
#pragma once

#include <ATen/ATen.h>

namespace qft::model::ops {

// bf16/fp16/fp32 activations reduce in fp32 (as transformers does); float64 (tests) stays float64.
inline at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }
inline at::Tensor to_acc(const at::Tensor& t) { return t.to(acc_type(t.scalar_type())); }

// grad += alpha * update, whatever dtype the gradient buffer has (the scaling rounds once, in fp32
// or better, inside add_).
inline void accumulate(at::Tensor& grad, const at::Tensor& update, double alpha = 1.0) {
  if (update.scalar_type() == grad.scalar_type())
    grad.add_(update, alpha);
  else
    grad.add_(update.to(grad.scalar_type()), alpha);
}

}  // namespace qft::model::ops
