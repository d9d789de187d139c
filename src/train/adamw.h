// AdamW with torch.optim.AdamW semantics (single-tensor path, the one torch takes for CPU tensors):
//   p *= 1 - lr * weight_decay
//   m  = lerp(m, g, 1 - beta1)                 (= beta1 m + (1 - beta1) g)
//   v  = beta2 v + (1 - beta2) g^2
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Scalars are computed in double as Python does. Parameters are fp32 master tensors updated in place;
// the state lives per parameter tensor so a ZeRO issue can hand each rank a subset of the entries.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace qft::train {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}

  // Registers a trainable fp32 tensor. `decay` false excludes it from weight decay (HF excludes norm
  // weights and biases). Names key the state in checkpoints.
  void add_param(std::string name, at::Tensor master, bool decay);

  // One update of every parameter with its gradient (same order as add_param), at learning rate `lr`.
  void step(const std::vector<at::Tensor>& grads, double lr);

  struct Entry {
    std::string name;
    at::Tensor param;       // fp32 master, updated in place
    at::Tensor exp_avg;     // m
    at::Tensor exp_avg_sq;  // v
    bool decay = true;
  };
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& entries() { return entries_; }
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps) { step_count_ = steps; }
  const AdamWOptions& options() const { return options_; }

 private:
  AdamWOptions options_;
  std::vector<Entry> entries_;
  int64_t step_count_ = 0;  // torch keeps one per parameter; all parameters step together here
};

// torch.nn.utils.clip_grad_norm_ (foreach=False, error_if_nonfinite=False): total = L2 norm of the
// per-tensor L2 norms; every gradient is multiplied by min(1, max_norm / (total + 1e-6)). Returns the
// total norm before clipping (what HF logs as grad_norm). `max_norm` <= 0: only the norm is computed.
double clip_grad_norm(const std::vector<at::Tensor>& grads, double max_norm);

}  // namespace qft::train
