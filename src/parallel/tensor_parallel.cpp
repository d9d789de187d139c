#include "parallel/tensor_parallel.h"

#include "core/error.h"
#include "model/ops/linear.h"
#include "parallel/tp_mappings.h"

namespace qft::parallel {

model::ShardedLayerHooks tensor_parallel_hooks(Communicator& tp, bool sequence_parallel) {
  model::ShardedLayerHooks hooks;
  Communicator* group = &tp;
  if (sequence_parallel) {
    hooks.column_input = [group](at::Tensor h) { return gather_from_sp_forward(h, *group); };
    hooks.row_output = [group](at::Tensor y) { return reduce_scatter_to_sp_forward(y, *group); };
    hooks.row_output_grad = [group](at::Tensor dy) { return reduce_scatter_to_sp_backward(dy, *group); };
    hooks.column_input_grad = [group](at::Tensor dh) { return gather_from_sp_backward(dh, *group); };
  } else {  // copy_to_tp forward and reduce_from_tp backward are identities
    hooks.row_output = [group](at::Tensor y) { return reduce_from_tp_forward(std::move(y), *group); };
    hooks.column_input_grad = [group](at::Tensor dh) { return copy_to_tp_backward(std::move(dh), *group); };
  }
  return hooks;
}

model::LayerContext tensor_parallel_context(model::LayerContext ctx, Communicator& tp, bool sequence_parallel) {
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
  ctx.sharded = tensor_parallel_hooks(tp, sequence_parallel);
  return ctx;
}

}  // namespace qft::parallel
