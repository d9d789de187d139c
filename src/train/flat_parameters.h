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
                 bool (*decays)(const std::string& name), int shards = 1);

  const std::vector<Entry>& entries() const { return entries_; }
  int64_t numel() const { return params_.numel(); }
  at::Tensor& params() { return params_; }
  at::Tensor& grads() { return grads_; }
  const at::Tensor& params() const { return params_; }
  const at::Tensor& grads() const { return grads_; }

  // Views of entry i in the parameter / gradient buffer, shaped like the original tensor. Structures
  // re-point their tensors at these (LoraWeights::with_tensors, Qwen3Weights::with_tensors).
  at::Tensor param(size_t i) const { return view(params_, i); }
  at::Tensor grad(size_t i) const { return view(grads_, i); }

  // The sub-ranges of `owned` excluded from weight decay (for AdamW).
  std::vector<parallel::Range> no_decay_ranges(parallel::Range owned) const;

 private:
  at::Tensor view(const at::Tensor& flat, size_t i) const;

  std::vector<Entry> entries_;
  at::Tensor params_;
  at::Tensor grads_;
};

}  // namespace qft::train
