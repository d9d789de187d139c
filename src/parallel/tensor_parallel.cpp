#include "parallel/tensor_parallel.h"

#include "core/error.h"
#include "model/ops/linear.h"
#include "parallel/tp_mappings.h"

namespace qft::parallel {

model::PartialSumHooks tensor_parallel_hooks(Communicator& tp) {
  model::PartialSumHooks hooks;
  Communicator* group = &tp;
  hooks.row_output = [group](at::Tensor y) { return reduce_from_tp_forward(std::move(y), *group); };
  hooks.column_input_grad = [group](at::Tensor dx) { return copy_to_tp_backward(std::move(dx), *group); };
  return hooks;
}

model::LayerContext tensor_parallel_context(model::LayerContext ctx, Communicator& tp) {
  for (model::Linear& linear : ctx.projections) {
    QFT_CHECK(linear.weight != nullptr, "layer {}: {} has no weight", ctx.layer, linear.info().name);
    const model::WeightShard& shard = linear.weight->shard();
    QFT_CHECK(shard.count == tp.size() && shard.index == tp.rank(),
              "layer {}: {} holds shard {} of {}, but this is rank {} of the {} group of {} ranks", ctx.layer,
              linear.info().name, shard.index, shard.count, tp.rank(), tp.name(), tp.size());
    if (linear.lora && shard.dim == 1 && shard.count > 1) {
      uint64_t& seed = linear.lora->dropout_seed;
      seed = model::ops::dropout_seed_for(seed, shard.index, static_cast<int>(shard.count));
    }
  }
  ctx.partial_sums = tensor_parallel_hooks(tp);
  return ctx;
}

}  // namespace qft::parallel
