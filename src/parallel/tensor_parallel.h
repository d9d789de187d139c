// One decoder layer under tensor parallelism, built from the model's own layer (model/decoder_layer.h):
// the rank computes with local_config (nH/T query heads, nKV/T KV heads, intermediate/T) on its shards
// (tp_sharding.h), and the layer's hooks (model::ShardedLayerHooks) are bound to the named pairs:
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
// Sequence parallelism (optional): between the two blocks the residual stream is split by rows, rank i
// holding rows [i·N/T, (i+1)·N/T) (N = B·T tokens, divisible by T), so the norms and residual adds run
// on N/T rows. copy_to_tp becomes gather_from_sp (all-gather rows before q/k/v and gate/up; backward
// reduce-scatter) and reduce_from_tp becomes reduce_scatter_to_sp (after o and down; backward
// all-gather): the same bytes as the all-reduces, a T-th of the norm work and activations. The layer
// norms' gradients then become partial sums too (partial_layer_gradients with sequence_parallel).
//
// LoRA dropout: a column projection's input is replicated, so every rank draws the single-GPU mask; a
// row projection's input is split, so each rank draws its own mask for its slice (seed mixed with the
// shard index): the same distribution as one GPU, not the same bits.
#pragma once

#include "model/decoder_layer.h"
#include "parallel/communicator.h"

namespace qft::parallel {

// The hooks that make a layer tensor-parallel over `tp`: copy_to_tp before q/k/v and gate/up,
// reduce_from_tp after o and down; with `sequence_parallel`, gather_from_sp and reduce_scatter_to_sp.
model::ShardedLayerHooks tensor_parallel_hooks(Communicator& tp, bool sequence_parallel = false);

// `ctx`, built as for a whole layer but from local_config and this rank's shards (shard_layer_weights,
// shard_lora, then model::layer_projections), made tensor-parallel over `tp`: the hooks set, and each
// row projection's dropout seed mixed with its shard index. Checks that every projection is shard
// tp.rank() of tp.size(). `tp` must outlive the context. Then model::decoder_layer_forward/backward as
// usual.
model::LayerContext tensor_parallel_context(model::LayerContext ctx, Communicator& tp,
                                           bool sequence_parallel = false);

}  // namespace qft::parallel
