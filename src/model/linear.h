// A projection as one value: which projection it is (the table in projection.h), where its base weight
// lives (WeightStorage), and its optional LoRA branch. ops::linear_forward / linear_backward take it, so
// a weight stored another way — a tensor-parallel shard, NF4 4-bit codes (QLoRA), later an expert bank —
// enters by adding a storage, not by changing callers. (torchtune's LoRALinear with `quantize_base`,
// picotron's column/row table.)
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <ATen/ATen.h>

#include "model/projection.h"

namespace qft::model {

// Which part of the whole [out, in] weight a storage holds: all of it (count 1), or slice `index` of
// `count` equal slices along `dim` (0 = output features, column-parallel; 1 = input features, row-parallel).
struct WeightShard {
  int dim = 0;
  int64_t index = 0;
  int64_t count = 1;
};

// The base weight of one projection, as stored on this rank.
class WeightStorage {
 public:
  virtual ~WeightStorage() = default;
  // "dense" (later "nf4"), for messages and the memory report.
  virtual const char* kind() const = 0;
  // [out, in] of the part held here.
  virtual std::vector<int64_t> shape() const = 0;
  // The weight as a dense [out, in] tensor in the compute dtype, ready for a GEMM. Dense storage returns
  // its tensor; a packed storage (NF4) dequantizes into a buffer it reuses, valid until its next call.
  virtual at::Tensor dense() const = 0;
  // The tensor that full fine-tuning updates and merge rewrites in place; null where the storage cannot
  // be trained (a quantized base).
  virtual at::Tensor* trainable() { return nullptr; }
  virtual const WeightShard& shard() const = 0;
  virtual int64_t storage_bytes() const = 0;
};

// A plain tensor in the compute dtype.
class DenseWeight final : public WeightStorage {
 public:
  explicit DenseWeight(at::Tensor weight, WeightShard shard = {});
  const char* kind() const override { return "dense"; }
  std::vector<int64_t> shape() const override { return weight_.sizes().vec(); }
  at::Tensor dense() const override { return weight_; }
  at::Tensor* trainable() override { return &weight_; }
  const WeightShard& shard() const override { return shard_; }
  int64_t storage_bytes() const override { return static_cast<int64_t>(weight_.nbytes()); }

 private:
  at::Tensor weight_;
  WeightShard shard_;
};

// y += scaling * (dropout(x) A^T) B^T, as PEFT's lora.Linear.
struct LoraBranch {
  // In the compute dtype (x's): cast from the fp32 masters once per optimizer step (LoraCompute in
  // model/lora.h), never per call. The gradients go to fp32 buffers shaped as these.
  at::Tensor A;  // [r, in]
  at::Tensor B;  // [out, r]
  double scaling = 1.0;
  double dropout = 0.0;       // probability of zeroing an input element; 0 disables (evaluation)
  uint64_t dropout_seed = 0;  // the mask is a pure function of this seed and the shape
};

struct Linear {
  Projection projection = Projection::q;
  // Shared: copying a Linear (to attach an adapter for one step) shares the frozen base, never copies it.
  std::shared_ptr<WeightStorage> weight;
  std::optional<LoraBranch> lora;

  const ProjectionInfo& info() const { return projection_info(projection); }
  // A dense Linear holding `weight` (no LoRA).
  static Linear dense(Projection p, at::Tensor weight);
  // The dense tensor behind a trainable storage; an error naming the projection for any other storage.
  at::Tensor& trainable_weight() const;
};

}  // namespace qft::model
