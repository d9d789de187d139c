// y = x W^T for one projection (model/linear.h), plus its LoRA branch y += scaling * (dropout(x) A^T) B^T
// when it has one. W comes from the projection's storage (WeightStorage::dense), so the same op serves
// a dense, sharded or 4-bit base. The base weight is frozen unless a weight-gradient buffer is passed
// (full fine-tuning): a frozen weight costs no weight-grad GEMM.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "model/linear.h"

namespace qft::model::ops {

// Seed of the dropout mask of one projection in one layer: a hash of the three.
uint64_t dropout_seed_for(uint64_t seed, int64_t layer, int projection);

// Dropout keep-mask (0/1 in `dtype`) for `shape`, reproducible from `seed` on a given device.
at::Tensor dropout_keep_mask(at::IntArrayRef shape, double p, uint64_t seed, at::ScalarType dtype, at::Device device);

// x [N, in] -> y [N, out]. With LoRA, *xa = dropout(x) A^T [N, r] is saved for backward.
at::Tensor linear_forward(const Linear& linear, const at::Tensor& x, at::Tensor* xa);

// Only what linear_forward saves for backward: dropout(x) A^T [N, r] (undefined without LoRA), the same
// values. A recompute whose output nobody reads needs no more (decoder_layer_recompute).
at::Tensor lora_input_projection(const Linear& linear, const at::Tensor& x);

struct LinearGrads {
  at::Tensor* dW = nullptr;  // += dy^T x when the base weight is trained
  at::Tensor* dA = nullptr;  // += LoRA gradients (fp32 buffers)
  at::Tensor* dB = nullptr;
  bool need_dx = true;  // false skips the input gradient (nothing upstream needs it)
};

// Returns dx (undefined when !need_dx) and accumulates the requested weight gradients.
at::Tensor linear_backward(const Linear& linear, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& xa,
                           const LinearGrads& grads);

}  // namespace qft::model::ops
