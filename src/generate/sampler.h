// Choosing the next token: transformers' logits processors (repetition penalty, then — when sampling —
// temperature, top-k, top-p, min-p, in the order GenerationMixin._get_logits_processor applies them),
// greedy argmax or seeded sampling, and the defaults a model directory's generation_config.json gives
// (GenerationConfig's defaults where the file is silent).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace qft::generate {

struct SamplingOptions {
  bool do_sample = false;          // false: greedy (argmax after the repetition penalty)
  double temperature = 1.0;        // > 0
  int64_t top_k = 50;              // 0 disables
  double top_p = 1.0;              // (0, 1]; 1 disables
  std::optional<double> min_p;     // [0, 1]; unset disables
  double repetition_penalty = 1.0; // > 0; 1 disables (CTRL's penalty on every token the row holds)
  uint64_t seed = 0;               // sampling: row r of a job draws from a stream seeded by (seed, r)
};

// Errors name `context` (a file or "--top-p") and the bad value.
void validate(const SamplingOptions& options, const std::string& context);

// What a model directory says about generation. Unset fields keep GenerationConfig's defaults.
struct GenerationDefaults {
  SamplingOptions sampling;
  std::optional<int64_t> max_new_tokens;
  std::optional<int64_t> max_length;  // prompt + new tokens, when the file gives only that
  std::vector<int64_t> eos_token_ids;  // generation_config.json's eos_token_id, else config.json's
};

// Reads `model_dir`/generation_config.json (when present) and config.json's eos_token_id. Keys of the
// wrong type are errors naming the file and key; keys qft does not use are ignored, as transformers ignores
// keys it does not know.
GenerationDefaults read_generation_defaults(const std::string& model_dir);

// logits [B, V] fp32 -> scores after the processors. `seen` [B, V] bool marks the tokens each row already
// holds (prompt and generated; only read when repetition_penalty != 1). Filtered tokens are -inf.
at::Tensor process_logits(const at::Tensor& logits, const at::Tensor& seen, const SamplingOptions& options);

// One draw per row from a seeded stream: uniform doubles in [0, 1).
class RowRandom {
 public:
  RowRandom(uint64_t seed, uint64_t row);
  double uniform();

 private:
  uint64_t state_;
};

// Next token of each row from processed scores [B, V]: argmax (greedy), or the inverse CDF of
// softmax(scores) at u[b] (sampling; u from each row's RowRandom). Returns [B] int64 on the host.
std::vector<int64_t> choose_tokens(const at::Tensor& scores, bool do_sample, const std::vector<double>& u);

}  // namespace qft::generate
