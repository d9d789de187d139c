// One decoder layer under tensor parallelism, built from the model's own layer (model/decoder_layer.h):
// the rank computes with local_config (nH/T query heads, nKV/T KV heads, intermediate/T) on its shards
// (tp_sharding.h), and the layer's two partial-sum points are bound to the named pairs:
//
//   norm(x) -> copy_to_tp -> q/k/v (column) -> attention, own heads -> o (row) -> reduce_from_tp -> + x
//   norm(x_mid) -> copy_to_tp -> gate/up (column) -> swiglu -> down (row) -> reduce_from_tp -> + x_mid
//
// Forward: one all-reduce after o, one after down. Backward: one all-reduce of the q+k+v input gradient
// (not three) and one of the gate+up input gradient. LoRA: A of a column projection is replicated and B
// split like W's rows; A of a row projection is split like W's columns and B replicated. The row
// projection's partial x·Aᵀ needs no collective of its own: the branch s·(x_i A_iᵀ)Bᵀ is linear in that
// partial product, so the all-reduce of the output sums it with the base. The replicated factors'
// gradients come out as per-rank partial sums (tp_sharding.h: sum_partial_gradients).
//
// LoRA dropout: a column projection's input is replicated, so every rank draws the single-GPU mask; a
// row projection's input is split, so each rank draws its own mask for its slice (seed mixed with the
// shard index): the same distribution as one GPU, not the same bits.
#pragma once

#include "model/decoder_layer.h"
#include "parallel/communicator.h"

namespace qft::parallel {

// The hooks that make a layer tensor-parallel over `tp` (reduce_from_tp forward, copy_to_tp backward).
model::PartialSumHooks tensor_parallel_hooks(Communicator& tp);

// `ctx`, built as for a whole layer but from local_config and this rank's shards (shard_layer_weights,
// shard_lora, then model::layer_projections), made tensor-parallel over `tp`: the hooks set, and each
// row projection's dropout seed mixed with its shard index. Checks that every projection is shard
// tp.rank() of tp.size(). `tp` must outlive the context. Then model::decoder_layer_forward/backward as
// usual.
model::LayerContext tensor_parallel_context(model::LayerContext ctx, Communicator& tp);

}  // namespace qft::parallel
