// Activation offloading (training.activation_offloading, axolotl's name): under gradient checkpointing the
// only activations kept through a step are the layers' inputs, [N, H] each, which at long sequences add up
// to more than the GPU holds (Qwen3-8B at 524k tokens: 36 x 4 GiB). This moves the inputs of the first
// `offloaded_layers` layers to host memory during forward and brings each back just before its layer's
// backward: copies run on a side CUDA stream, ordered with compute by events, the copy out overlapping
// the layer's forward and the copy back of layer i-1 overlapping layer i's backward. The host buffers are
// page-locked (pinned, for asynchronous copies), allocated once at their size and reused by later steps.
// On a CPU the same calls copy to a separate host buffer and back, so the path is tested without a GPU.
// The values are moved, never changed: a run is bitwise the same with or without offloading.
//
// The first layers are the ones offloaded because their inputs wait longest (their backward comes last);
// the last layers' inputs stay on the GPU, where their backward needs them right after the forward.
// With training.checkpoint_residuals a layer keeps a second tensor of the same shape, its residual after
// attention (Part::mid_residual), offloaded and brought back with its input.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/ATen.h>

namespace qft::model {

class ActivationOffload {
 public:
  // Layers [0, offloaded_layers) go to host memory.
  explicit ActivationOffload(int64_t offloaded_layers);
  ~ActivationOffload();
  ActivationOffload(const ActivationOffload&) = delete;
  ActivationOffload& operator=(const ActivationOffload&) = delete;

  int64_t offloaded_layers() const { return offloaded_layers_; }
  bool offloads(int64_t layer) const { return layer >= 0 && layer < offloaded_layers_; }

  // What of a layer is kept: its input, or its residual after attention.
  enum class Part { input = 0, mid_residual = 1 };

  // Forward, when layer `layer` is about to run on input `x` (or has made its mid residual `x`): what the
  // step keeps for it — `x` itself, or an undefined tensor when it went to host memory (the copy may
  // still be running; `x`'s device memory is not reused before it finished).
  at::Tensor save(int64_t layer, const at::Tensor& x, Part part = Part::input);

  // Backward, before layer `layer`'s recompute: its input (or mid residual) again, on the device it came
  // from (`kept` is what save returned). Starts bringing back what layer-1 saved so that it arrives
  // during this layer's backward.
  at::Tensor restore(int64_t layer, const at::Tensor& kept, Part part = Part::input);

  // Page-locked (GPU) or plain (CPU) host bytes held for the offloaded inputs.
  int64_t host_bytes() const;

 private:
  struct Slot;
  static constexpr int64_t kParts = 2;
  Slot& slot(int64_t layer, Part part) { return *slots_[layer * kParts + static_cast<int64_t>(part)]; }
  void start_restore(int64_t layer, Part part);
  static at::Tensor host_view(const Slot& s);

  int64_t offloaded_layers_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;
  struct Streams;
  std::unique_ptr<Streams> streams_;  // CUDA: the side stream (created at the first device copy)
};

}  // namespace qft::model
