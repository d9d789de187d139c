// config.json's rope_scaling (transformers >= 5: rope_parameters) as Qwen3Config resolves it; the
// tables are computed by model/ops/rope. Kept free of libtorch so the config reader is too (its fuzz
// harness builds without torch).
#pragma once

#include <cstdint>

namespace qft::model {

struct RopeScaling {
  enum class Type { none, linear, yarn };
  Type type = Type::none;
  double factor = 1.0;  // linear: inv_freq / factor; yarn: the context extension ratio
  // yarn: the pre-training context length; beta_fast/beta_slow bound the ramp between extrapolated
  // (high-frequency) and interpolated (low-frequency) dimensions; truncate rounds the bounds outwards.
  int64_t original_max_position_embeddings = 0;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  bool truncate = true;
  // cos and sin are multiplied by it (yarn's "mscale"; 1 for the other types).
  double attention_factor = 1.0;
};

}  // namespace qft::model
