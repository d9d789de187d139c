// How tensor parallelism cuts the model, and how a sharded LoRA adapter is put back together.
//
// Megatron's styles (model/projection.h's table): a column-parallel projection (q, k, v, gate, up) keeps
// rows [i·out/T, (i+1)·out/T) of W and of LoRA B, and all of A; a row-parallel one (o, down) keeps the
// same columns of W and of A, and all of B. Rows of q/k/v are head-major, so a contiguous slice is a
// whole group of heads: rank i holds query heads [i·nH/T, (i+1)·nH/T) and KV heads [i·nKV/T, ...), and
// each local query head still reads its own KV head (nH/nKV query heads per KV head on every rank).
// The embedding and lm_head keep rows [i·V/T, (i+1)·V/T) of the vocabulary. The norms are replicated.
//
// T must divide num_key_value_heads (hence num_attention_heads), intermediate_size and vocab_size; no
// padding: every Qwen3 vocabulary is a multiple of 128, and unpadded shards are plain slices of the
// Hugging Face tensors, so loading and saving need no remapping.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "model/linear.h"
#include "model/lora.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"
#include "parallel/communicator.h"

namespace qft::parallel {

// An error naming `tensor_parallel_size` unless T >= 1 divides every split dimension of `config`.
void check_tensor_parallel_size(const model::Qwen3Config& config, int64_t tensor_parallel_size);

// The config one rank's layers compute with: heads, KV heads and intermediate size divided by T.
model::Qwen3Config local_config(const model::Qwen3Config& config, int64_t tensor_parallel_size);

// Vocabulary rows [begin, end) of rank `index` of `count`.
struct VocabShard {
  int64_t begin = 0, end = 0;
  int64_t vocab_size = 0;  // of the whole vocabulary
  int64_t size() const { return end - begin; }
};
VocabShard vocab_shard(int64_t vocab_size, int64_t index, int64_t count);
// Rows of `table` ([V, H]: embed_tokens, lm_head) that rank `index` of `count` holds.
at::Tensor shard_vocab_rows(const at::Tensor& table, int64_t index, int64_t count);

// The dimension of W ([out, in]) that a projection splits: 0 for column-parallel, 1 for row-parallel.
int shard_dim(model::Projection p);

// Rank `index` of `count`'s part of a projection: a DenseWeight holding the slice, with its WeightShard,
// and the LoRA branch (if any) sharded as its style says. `full` must hold the whole weight.
model::Linear shard_linear(const model::Linear& full, int64_t index, int64_t count);
model::LoraPair shard_lora_pair(const model::LoraPair& full, model::Projection p, int64_t index, int64_t count);

// A layer's weights for one rank: norms shared with `full`, projections sharded.
model::LayerWeights shard_layer_weights(const model::LayerWeights& full, int64_t index, int64_t count);
// The model's weights for one rank: embed_tokens and lm_head by vocabulary rows (a tied lm_head stays
// the very tensor embed_tokens), the final norm shared, every layer as shard_layer_weights.
model::Qwen3Weights shard_weights(const model::Qwen3Weights& full, int64_t index, int64_t count);
// shard_weights(Qwen3Weights::load(...), index, count) without ever holding the whole model: each tensor's
// slice is cut from the memory-mapped checkpoint before it is copied, so a rank's memory holds only its
// share (32B under T = 8 on one node: 8 GB per rank instead of 64).
model::Qwen3Weights load_weight_shard(const std::string& model_dir, const model::Qwen3Config& config,
                                      at::ScalarType dtype, at::Device device, int64_t index, int64_t count);
// Adapters for one rank (fresh contiguous tensors: they become views of the flat buffers later).
model::LoraWeights shard_lora(const model::LoraWeights& full, int64_t index, int64_t count);

// The whole adapter from every rank's shard (collective over `tp`): the split factor (B of column, A
// of row projections) is all-gathered, the replicated one taken from this rank. The result has the
// layout of a single-GPU adapter, so the PEFT writer saves it unchanged.
model::LoraWeights gather_lora(const model::LoraWeights& local, Communicator& tp);

// Gradients that each tensor-parallel rank holds as a partial sum, whose sum over the group is the
// true gradient: the replicated LoRA factors (A of column-, B of row-parallel projections: their
// input or output is split across ranks) and, in full fine-tuning, q_norm and k_norm (each rank
// normalises its own heads); with sequence parallelism also the two layer norms (each rank normalises
// its own rows). sum_partial_gradients all-reduces them over `tp` in one collective; call it once per
// optimizer step, before the data-parallel reduction. (Without sequence parallelism the layer norms'
// gradients are whole on every rank: their input gradient was already summed by copy_to_tp.)
std::vector<at::Tensor> partial_lora_gradients(const model::LoraWeights& grads);
std::vector<at::Tensor> partial_layer_gradients(const model::LayerWeights& grads, bool sequence_parallel = false);
void sum_partial_gradients(const std::vector<at::Tensor>& partial, Communicator& tp);

}  // namespace qft::parallel
