#include "model/ops/embedding.h"

namespace qft::model::ops {

at::Tensor embedding_forward(const at::Tensor& W, const at::Tensor& ids) { return W.index_select(0, ids.reshape(-1)); }

void embedding_backward(const at::Tensor& dy, const at::Tensor& ids, at::Tensor& dW) {
  dW.index_add_(0, ids.reshape(-1), dy.reshape({-1, dW.size(1)}).to(dW.scalar_type()));
}

}  // namespace qft::model::ops
