// Every trainable tensor as a view of one contiguous fp32 buffer, and every gradient as a view of a
// second one of the same layout (llm.c's flat parameter/gradient buffers). The optimizer steps ranges of
// the flat buffer, the gradient reduction is one collective over it, and ZeRO hands each data-parallel
// rank a range: none of them needs to know which tensors the buffer holds.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "parallel/communicator.h"

namespace qft::train {

// Which parts of the flat buffers a rank stores.
struct FlatStorage {
  // -1: every parameter; r: only shard r of the `shards` equal shards (ZeRO-3 full fine-tuning: the fp32
  // masters of the other shards live on the other ranks).
  int only_shard = -1;
  // false: no gradient buffer (ZeRO-2/3 keep gradients in per-layer slots and a shard: src/parallel/zero.h).
  bool gradients = true;
};

class FlatParameters {
 public:
  struct Entry {
    std::string name;            // PEFT / Hugging Face key; names the entry in checkpoints
    std::vector<int64_t> shape;
    parallel::Range range;       // where it lies in the flat buffers
    bool decay = true;           // weight decay applies (HF excludes norm weights)
  };

  // Lays out `tensors` in order, copies their values into the fp32 parameter buffer on `device`, zeroes
  // the gradient buffer. `decays(name)` says whether weight decay applies to a tensor. The buffers are
  // padded with zeros to a multiple of `shards`, so that ZeRO's shards are equal (NCCL's reduce-scatter
  // and all-gather take equal parts); the padding belongs to no entry and stays zero.
  FlatParameters(const std::vector<std::pair<std::string, at::Tensor>>& tensors, at::Device device,
                 bool (*decays)(const std::string& name), int shards = 1, FlatStorage storage = {});

  const std::vector<Entry>& entries() const { return entries_; }
  // The padded length of the whole flat buffer (all ranks' shards together).
  int64_t numel() const { return numel_; }
  // The part of the parameter buffer this rank stores: everything, or FlatStorage::only_shard's range.
  // params() holds exactly that range (element 0 = flat index stored().begin).
  parallel::Range stored() const { return stored_; }
  bool has_gradients() const { return grads_.defined(); }
  at::Tensor& params() { return params_; }
  at::Tensor& grads() { return grads_; }
  const at::Tensor& params() const { return params_; }
  const at::Tensor& grads() const { return grads_; }

  // Views of entry i in the parameter / gradient buffer, shaped like the original tensor. Structures
  // re-point their tensors at these (LoraWeights::with_tensors, Qwen3Weights::with_tensors). The entry
  // must lie in the stored range (and the gradient buffer exist).
  at::Tensor param(size_t i) const { return view(params_, i); }
  at::Tensor grad(size_t i) const { return view(grads_, i); }

  // The sub-ranges of `owned` excluded from weight decay (for AdamW).
  std::vector<parallel::Range> no_decay_ranges(parallel::Range owned) const;

 private:
  at::Tensor view(const at::Tensor& flat, size_t i) const;

  std::vector<Entry> entries_;
  int64_t numel_ = 0;
  parallel::Range stored_;
  at::Tensor params_;
  at::Tensor grads_;
};

}  // namespace qft::train
