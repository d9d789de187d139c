// The communication of tensor parallelism, as named forward/backward pairs (Megatron core's
// tensor_parallel/mappings.py, picotron's tp_communications.py). Every parallel layer calls these and
// nothing else to talk to the other ranks of its tensor-parallel group, so each collective in a step
// has a name and a known partner in the other direction:
//
//   pair                     forward                        backward
//   copy_to_tp               identity                       all-reduce (sum)
//   reduce_from_tp           all-reduce (sum)               identity
//   gather_from_tp           all-gather along the last dim  split along the last dim (keep own slice)
//   scatter_to_tp            split along the last dim       all-gather along the last dim
//   gather_from_sp           all-gather along dim 0         reduce-scatter along dim 0
//   reduce_scatter_to_sp     reduce-scatter along dim 0     all-gather along dim 0
//
// (sp: sequence parallelism, rows of [N, H] split across the group.) The all-reduces work in place on
// the tensor passed (a non-contiguous one is copied first) and return it; splits return a contiguous
// copy of this rank's slice. Splits need the dimension divisible by the group size (an error says so).
// A group of one makes every function an identity.
#pragma once

#include <ATen/ATen.h>

#include "parallel/communicator.h"

namespace qft::parallel {

at::Tensor copy_to_tp_forward(at::Tensor x);
at::Tensor copy_to_tp_backward(at::Tensor dx_partial, Communicator& tp);

at::Tensor reduce_from_tp_forward(at::Tensor y_partial, Communicator& tp);
at::Tensor reduce_from_tp_backward(at::Tensor dy);

at::Tensor gather_from_tp_forward(const at::Tensor& x_local, Communicator& tp);
at::Tensor gather_from_tp_backward(const at::Tensor& dy, Communicator& tp);

at::Tensor scatter_to_tp_forward(const at::Tensor& x, Communicator& tp);
at::Tensor scatter_to_tp_backward(const at::Tensor& dy_local, Communicator& tp);

at::Tensor gather_from_sp_forward(const at::Tensor& x_rows, Communicator& tp);
at::Tensor gather_from_sp_backward(const at::Tensor& dy, Communicator& tp);

at::Tensor reduce_scatter_to_sp_forward(const at::Tensor& y_partial, Communicator& tp);
at::Tensor reduce_scatter_to_sp_backward(const at::Tensor& dy_rows, Communicator& tp);

// The building blocks of the pairs, for the sharding code: the own slice `index` of `count` equal
// slices along `dim` (contiguous copy), and the concatenation along `dim` of every rank's `local`.
at::Tensor split_along(const at::Tensor& x, int64_t dim, int64_t index, int64_t count, const char* what);
at::Tensor all_gather_along(const at::Tensor& local, int64_t dim, Communicator& comm);
// Sums every tensor over `comm` in place, through one flat buffer (one collective) per dtype and device.
void all_reduce_sum_all(const std::vector<at::Tensor>& tensors, Communicator& comm);

}  // namespace qft::parallel
