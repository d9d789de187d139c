#include "parallel/tp_mappings.h"

#include "core/error.h"

namespace qft::parallel {
namespace {

at::Tensor all_reduce_in_place(at::Tensor t, Communicator& comm) {
  if (comm.size() == 1) return t;
  if (!t.is_contiguous()) t = t.contiguous();
  comm.all_reduce_sum(t);
  return t;
}

// Sums [count * m, ...] over the group and keeps rows [rank * m, (rank + 1) * m) of the sum.
at::Tensor reduce_scatter_rows(const at::Tensor& x, Communicator& comm) {
  const int64_t count = comm.size();
  if (count == 1) return x;
  QFT_CHECK(x.dim() >= 1 && x.size(0) % count == 0,
            "reduce-scatter along rows: {} rows do not split evenly over the {} ranks of the {} group",
            x.dim() >= 1 ? x.size(0) : 0, count, comm.name());
  at::Tensor flat = x.contiguous().view(-1).clone();
  comm.reduce_scatter_sum(flat, split_evenly(flat.numel(), static_cast<int>(count)));
  std::vector<int64_t> shape = x.sizes().vec();
  shape[0] /= count;
  const int64_t n = flat.numel() / count;
  return flat.narrow(0, comm.rank() * n, n).view(shape);
}

}  // namespace

at::Tensor split_along(const at::Tensor& x, int64_t dim, int64_t index, int64_t count, const char* what) {
  if (dim < 0) dim += x.dim();
  QFT_CHECK(dim >= 0 && dim < x.dim(), "{}: cannot split a {}-D tensor along dimension {}", what, x.dim(), dim);
  const int64_t n = x.size(dim);
  QFT_CHECK(n % count == 0, "{}: dimension {} of size {} does not split evenly into {} tensor-parallel shards", what,
            dim, n, count);
  QFT_CHECK(index >= 0 && index < count, "{}: shard {} of {}", what, index, count);
  return x.narrow(dim, index * (n / count), n / count).contiguous();
}

at::Tensor all_gather_along(const at::Tensor& local, int64_t dim, Communicator& comm) {
  if (dim < 0) dim += local.dim();
  QFT_CHECK(dim >= 0 && dim < local.dim(), "all-gather: a {}-D tensor has no dimension {}", local.dim(), dim);
  const int64_t count = comm.size();
  if (count == 1) return local;
  const int64_t n = local.numel();
  at::Tensor flat = at::empty({count * n}, local.options());
  flat.narrow(0, comm.rank() * n, n).view(local.sizes()).copy_(local);
  comm.all_gather(flat, split_evenly(count * n, static_cast<int>(count)));
  // [count, ...local] -> move the rank axis next to `dim` and merge the two.
  std::vector<int64_t> stacked = local.sizes().vec();
  stacked.insert(stacked.begin(), count);
  at::Tensor t = flat.view(stacked).movedim(0, dim);
  std::vector<int64_t> merged = local.sizes().vec();
  merged[dim] *= count;
  return t.reshape(merged);
}

void all_reduce_sum_all(const std::vector<at::Tensor>& tensors, Communicator& comm) {
  if (comm.size() == 1) return;
  // One flat buffer (one collective) per dtype and device, in the order they first appear.
  std::vector<bool> done(tensors.size(), false);
  for (size_t first = 0; first < tensors.size(); ++first) {
    if (done[first]) continue;
    std::vector<size_t> group;
    for (size_t i = first; i < tensors.size(); ++i)
      if (!done[i] && tensors[i].scalar_type() == tensors[first].scalar_type() &&
          tensors[i].device() == tensors[first].device()) {
        group.push_back(i);
        done[i] = true;
      }
    std::vector<at::Tensor> flat;
    for (size_t i : group) flat.push_back(tensors[i].reshape(-1));
    at::Tensor buffer = at::cat(flat);
    comm.all_reduce_sum(buffer);
    int64_t offset = 0;
    for (size_t i : group) {
      at::Tensor target = tensors[i];  // shares storage with the caller's tensor
      target.copy_(buffer.narrow(0, offset, target.numel()).view(target.sizes()));
      offset += target.numel();
    }
  }
}

at::Tensor copy_to_tp_forward(at::Tensor x) { return x; }
at::Tensor copy_to_tp_backward(at::Tensor dx_partial, Communicator& tp) {
  return all_reduce_in_place(std::move(dx_partial), tp);
}

at::Tensor reduce_from_tp_forward(at::Tensor y_partial, Communicator& tp) {
  return all_reduce_in_place(std::move(y_partial), tp);
}
at::Tensor reduce_from_tp_backward(at::Tensor dy) { return dy; }

at::Tensor gather_from_tp_forward(const at::Tensor& x_local, Communicator& tp) {
  return all_gather_along(x_local, -1, tp);
}
at::Tensor gather_from_tp_backward(const at::Tensor& dy, Communicator& tp) {
  return tp.size() == 1 ? dy : split_along(dy, -1, tp.rank(), tp.size(), "gather_from_tp backward");
}

at::Tensor scatter_to_tp_forward(const at::Tensor& x, Communicator& tp) {
  return tp.size() == 1 ? x : split_along(x, -1, tp.rank(), tp.size(), "scatter_to_tp forward");
}
at::Tensor scatter_to_tp_backward(const at::Tensor& dy_local, Communicator& tp) {
  return all_gather_along(dy_local, -1, tp);
}

at::Tensor gather_from_sp_forward(const at::Tensor& x_rows, Communicator& tp) {
  return all_gather_along(x_rows, 0, tp);
}
at::Tensor gather_from_sp_backward(const at::Tensor& dy, Communicator& tp) { return reduce_scatter_rows(dy, tp); }

at::Tensor reduce_scatter_to_sp_forward(const at::Tensor& y_partial, Communicator& tp) {
  return reduce_scatter_rows(y_partial, tp);
}
at::Tensor reduce_scatter_to_sp_backward(const at::Tensor& dy_rows, Communicator& tp) {
  return all_gather_along(dy_rows, 0, tp);
}

}  // namespace qft::parallel
