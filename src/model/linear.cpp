#include "model/linear.h"

#include "core/error.h"

namespace qft::model {

DenseWeight::DenseWeight(at::Tensor weight, WeightShard shard) : weight_(std::move(weight)), shard_(shard) {
  // Undefined: a slot that loading fills in (Qwen3Weights::load checks the shape against the config).
  QFT_CHECK(!weight_.defined() || weight_.dim() == 2, "a projection weight must be 2-D [out, in], got {} dimensions",
            weight_.dim());
}

Linear Linear::dense(Projection p, at::Tensor weight) {
  Linear l;
  l.projection = p;
  l.weight = std::make_shared<DenseWeight>(std::move(weight));
  return l;
}

at::Tensor& Linear::trainable_weight() const {
  QFT_CHECK(weight != nullptr, "{}: the projection has no weight", info().name);
  at::Tensor* t = weight->trainable();
  QFT_CHECK(t != nullptr, "{}: a {} weight cannot be trained or merged in place", info().name, weight->kind());
  return *t;
}

}  // namespace qft::model
