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

// A host tensor on `device` without a host synchronisation: on CUDA it goes through pinned memory as a
// non-blocking copy (ATen's pinned-memory cache keeps the staging block until the copy has run), so the
// host keeps queueing work while the GPU is busy. A tensor already on `device` is returned as is.
inline at::Tensor host_to_device(const at::Tensor& t, at::Device device) {
  if (t.device() == device) return t;
  if (!t.device().is_cpu() || !device.is_cuda()) return t.to(device);
  return t.pin_memory().to(device, /*non_blocking=*/true);
}

}  // namespace qft::model::ops
