// AdamW with torch.optim.AdamW semantics (single-tensor path, the one torch takes for CPU tensors):
//   p *= 1 - lr * weight_decay
//   m  = lerp(m, g, 1 - beta1)                 (= beta1 m + (1 - beta1) g)
//   v  = beta2 v + (1 - beta2) g^2
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Every operation is element-wise, so it runs on a range of the flat parameter buffer
// (flat_parameters.h) at once: the whole buffer in a world of one, this rank's shard under ZeRO.
// Scalars are computed in double as Python does; parameters, gradients and state are fp32.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>

#include "parallel/communicator.h"

namespace qft::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // Optimizer state (m, v) for `owned`, a range of the flat parameter buffer, on `device`. `no_decay`:
  // the sub-ranges of `owned` that weight decay skips (HF excludes norm weights and biases).
  AdamW(AdamWOptions options, parallel::Range owned, std::vector<parallel::Range> no_decay, at::Device device);

  // One update of params[owned] from grads[owned] (1-D fp32 flat buffers) at learning rate `lr`.
  void step(at::Tensor& params, const at::Tensor& grads, double lr);
  // The same update given only the owned range of each buffer ([owned().size()] each): ZeRO-2/3 keep no
  // whole gradient buffer, ZeRO-3 full fine-tuning no whole parameter buffer.
  void step_owned(at::Tensor params_owned, const at::Tensor& grads_owned, double lr);

  const parallel::Range& owned() const { return owned_; }
  // m and v of the owned range, element i belonging to flat index owned().begin + i.
  at::Tensor& exp_avg() { return exp_avg_; }
  at::Tensor& exp_avg_sq() { return exp_avg_sq_; }
  const at::Tensor& exp_avg() const { return exp_avg_; }
  const at::Tensor& exp_avg_sq() const { return exp_avg_sq_; }
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps) { step_count_ = steps; }
  const AdamWOptions& options() const { return options_; }

 private:
  AdamWOptions options_;
  parallel::Range owned_;
  std::vector<parallel::Range> decay_ranges_;  // owned minus no_decay, relative to the flat buffer
  at::Tensor range_end_, range_decay_;         // the same as runs relative to owned, for the fused kernel
  at::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_count_ = 0;  // torch keeps one per parameter; all parameters step together here
};

// torch.nn.utils.clip_grad_norm_ (foreach=False, error_if_nonfinite=False): total = L2 norm of the
// per-tensor L2 norms; every gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns the
// total norm before clipping (what HF logs as grad_norm) as a 0-dim fp32 tensor on the gradients' device,
// unread: nothing here waits for the GPU. `max_norm` <= 0: only the norm is computed.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm);

}  // namespace qft::train
