// ZeRO over the data-parallel group, on ranges of flat buffers (llm.c's zero.cuh): every rank owns the
// range shards[rank] of a flat buffer, and the layers of the model are contiguous ranges of it.
//
//   stage 0  gradients all-reduced, bucket by bucket (one bucket per decoder layer) as backward ends each
//            layer of the step's last micro-batch; optimizer state and masters replicated
//   stage 1  the same buckets reduce-scattered: each rank keeps the sum of its own shard, updates it and
//            all-gathers the parameters (the trainer)
//   stage 2  gradients never exist whole: a layer's gradients go into one of two slots, reduce-scattered
//            after every micro-batch's backward of that layer and added to the rank's gradient shard
//   stage 3  stage 2, and the layers' weights (frozen base for LoRA; compute copies of the masters for
//            full fine-tuning) exist only as each rank's shard, gathered into one of two slots just
//            before a layer runs, the next layer's gather overlapping this layer's compute
//
// What lies outside the layers (embed_tokens, the final norm, lm_head: "resident") stays whole on every
// rank; its gradients are reduced once per step. On NCCL the collectives run on the communicator's
// stream, ordered after the compute already queued, and a slot is reused only after its collective was
// waited for, so the compute stream never stalls on a collective it does not need yet.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "model/qwen3_model.h"
#include "parallel/communicator.h"

namespace qft::parallel {

// The parts of each rank's shard that fall inside `span`, relative to span.begin, in rank order: they tile
// [0, span.size()) (a shard that misses the span contributes an empty range), which is the `ranges`
// contract of Communicator's collectives on the span's sub-buffer.
std::vector<Range> shard_parts(const std::vector<Range>& shards, Range span);

// `dest` ([span.size()]) receives flat range `span` from the ranks whose shards hold parts of it: this rank
// copies its part from `own` (its shard, shards[rank] of the flat buffer), then the parts are all-gathered.
// Every rank of `data` must call it for the same span, also one whose shard misses the span.
std::unique_ptr<Work> gather_span_async(Communicator& data, const std::vector<Range>& shards, const at::Tensor& own,
                                        Range span, at::Tensor dest);
// After a reduce-scatter of `reduced` ([span.size()], the span's parts per shard_parts), adds this rank's part
// of it into `own_shard` (shards[rank] of the flat buffer).
void add_own_part(Communicator& data, const std::vector<Range>& shards, Range span, const at::Tensor& reduced,
                  at::Tensor& own_shard);

// The entries of a flat buffer grouped by decoder layer.
struct LayerLayout {
  std::vector<Range> layers;    // layer i's entries, one contiguous range
  std::vector<Range> resident;  // the non-empty ranges outside every layer, in order (padding included)
  int64_t numel = 0;

  int64_t max_layer_size() const;
  // The layer whose range holds all of `r`, or -1 (resident, or across layers).
  int64_t layer_containing(Range r) const;
  // Entry names say their layer (".layers.<i>." as in HF and PEFT keys); a layer's entries must be
  // contiguous and every layer must have some.
  static LayerLayout from_entries(const std::vector<std::pair<std::string, Range>>& entries, int64_t numel,
                                  int64_t num_layers);
};

// Storage for a flat buffer of which only two layers exist at a time (layer i in slot i % 2), beside
// buffers for the resident ranges (when asked for). Views of it stand in for the whole buffer's tensors:
// the model's layer i reads (or writes) slot i % 2, which ZeRO fills (or drains) around the layer's use.
class LayerSlots {
 public:
  LayerSlots(LayerLayout layout, at::TensorOptions options, bool with_resident);
  // The storage of the flat range `r`, which lies inside one layer or one resident range.
  at::Tensor view(Range r) const;
  // Layer `layer`'s span of its slot, 1-D.
  at::Tensor slot_of(int64_t layer) const;
  const at::Tensor& resident(size_t k) const { return resident_.at(k); }
  const LayerLayout& layout() const { return layout_; }

 private:
  LayerLayout layout_;
  std::vector<at::Tensor> slots_;
  std::vector<at::Tensor> resident_;
};

// Sums the data-parallel ranks' gradients, layer by layer as backward finishes each one.
class GradientReducer {
 public:
  // Stages 0 and 1: `full_grads` is the whole flat gradient buffer the model accumulates into; when
  // `overlap`, consecutive layers are grouped into buckets of at least `bucket_elements` (DDP's
  // bucket_cap_mb: a collective per layer of a small model or of LoRA would cost more in launches than it
  // hides) and each bucket is reduced during the step's last micro-batch as soon as backward has left
  // all its layers (else everything at finish). Stages 2 and 3: the model's layer gradients are views of
  // `slots` (fp32, resident buffers included), reduced per layer (a slot holds one), and the sums land in
  // shard(); `overlap` is implied.
  GradientReducer(Communicator& data, int zero_stage, std::vector<Range> shards, LayerLayout layout,
                  at::Tensor full_grads, LayerSlots* slots, bool overlap, int64_t bucket_elements = 0);

  // Before the first micro-batch of a step: stages 2 and 3 clear the shard and the resident gradients
  // (stages 0 and 1: the trainer clears the whole buffer).
  void start_step();
  void start_micro_batch(bool last) { last_micro_batch_ = last; }
  // Stages 2/3: layer `layer`'s slot is drained (its previous reduction added to the shard) and zeroed.
  void before_backward(int64_t layer);
  // Layer `layer`'s gradients of this micro-batch are complete: start their reduction.
  void layer_done(int64_t layer);
  // Reduces what is left (the resident ranges, and every layer without overlap) and waits for all of it.
  // Afterwards stage 0: full_grads holds the sums; stage 1: full_grads[shards[rank]] does; stages 2/3:
  // shard() does.
  void finish();
  // Stages 2/3: this rank's shard of the summed gradients, [shards[rank].size()] fp32.
  at::Tensor& shard() { return shard_; }

 private:
  struct Pending {
    int64_t layer = -1;
    std::unique_ptr<Work> work;
  };
  void reduce_range(const at::Tensor& buffer_of_span, Range span, std::vector<std::unique_ptr<Work>>& out);
  void drain(Pending& pending);

  Communicator& data_;
  int stage_;
  std::vector<Range> shards_;
  LayerLayout layout_;
  at::Tensor full_grads_;
  LayerSlots* slots_;
  bool overlap_;
  bool last_micro_batch_ = true;
  at::Tensor shard_;
  std::vector<std::unique_ptr<Work>> full_works_;  // stages 0/1
  // Stages 0/1 with overlap: buckets of consecutive layers (`lowest` is the layer backward leaves last),
  // in backward order, and which have started this step. A rank without micro-batches in a step (an
  // epoch's end) starts them all at finish, in the same order, as the others did.
  struct Bucket {
    int64_t lowest = 0;
    Range span;
  };
  std::vector<Bucket> buckets_;
  std::vector<int64_t> bucket_of_layer_;
  std::vector<bool> started_;
  Pending pending_[2];                             // stages 2/3: one per slot
};

// ZeRO-3's layer weights: this rank keeps `own`, its shard of a flat compute-dtype buffer; a layer's range
// is all-gathered into its slot just before the layer runs, and the next layer's gather is started then
// so that it overlaps this layer's compute.
class LayerWeightGatherer {
 public:
  // `own` is shards[data.rank()] of the flat buffer laid out as `slots`; the caller keeps it up to date
  // (and calls invalidate() when it changed).
  LayerWeightGatherer(Communicator& data, std::vector<Range> shards, at::Tensor own, LayerSlots& slots);

  // Layer `layer` is in its slot when this returns (on GPU: once the compute stream reaches this point),
  // and the gather of the next layer in `pass` order has been started.
  void before_layer(int64_t layer, model::LayerPass pass);
  // The shards changed (an optimizer step): no slot holds a current layer any more.
  void invalidate();
  // Fills the slots' resident buffers from the shards (full fine-tuning's embed_tokens, norm and lm_head
  // after an optimizer step).
  void gather_resident();
  // Hooks that call before_layer, for model::StepOptions / forward_loss.
  model::LayerHooks hooks();

 private:
  void start_gather(int64_t layer);

  Communicator& data_;
  std::vector<Range> shards_;
  at::Tensor own_;
  LayerSlots& slots_;
  int64_t holds_[2] = {-1, -1};  // the layer each slot holds (or is being gathered into it)
  std::unique_ptr<Work> gathering_[2];
};

}  // namespace qft::parallel
