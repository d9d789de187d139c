#include "model/ops/swiglu.h"

#include "model/ops/fused_kernels.h"

namespace qft::model::ops {

at::Tensor swiglu_forward(const at::Tensor& gate, const at::Tensor& up) {
  if (at::Tensor h = fused::swiglu_forward(gate, up); h.defined()) return h;
  return at::silu(gate) * up;
}

std::pair<at::Tensor, at::Tensor> swiglu_backward(const at::Tensor& dh, const at::Tensor& gate, const at::Tensor& up) {
  if (auto grads = fused::swiglu_backward(dh, gate, up)) return std::move(*grads);
  // The same three kernels autograd runs for silu(gate) * up: each computes in fp32 internally and
  // rounds once, so low-precision results match transformers and no fp32 temporaries are made.
  at::Tensor dup = dh * at::silu(gate);
  at::Tensor dgate = at::silu_backward(dh * up, gate);  // dh*up * silu'(gate)
  return {std::move(dgate), std::move(dup)};
}

}  // namespace qft::model::ops
