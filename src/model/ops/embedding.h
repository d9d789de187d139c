// Token embedding lookup; its gradient (a scatter-add) exists only when the table is trained.
#pragma once

#include <ATen/ATen.h>

namespace qft::model::ops {

// W [V, H], ids [...] int64 -> [numel(ids), H]
at::Tensor embedding_forward(const at::Tensor& W, const at::Tensor& ids);
// dW[ids[n]] += dy[n]
void embedding_backward(const at::Tensor& dy, const at::Tensor& ids, at::Tensor& dW);

}  // namespace qft::model::ops
