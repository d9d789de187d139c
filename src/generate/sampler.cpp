#include "generate/sampler.h"

#include <algorithm>
#include <filesystem>
#include <limits>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_reader.h"
#include "core/files.h"
#include "core/splitmix64.h"

namespace qft::generate {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

bool has(const nlohmann::json& j, const char* key) { return j.contains(key) && !j[key].is_null(); }

double number(const nlohmann::json& j, const std::string& file, const char* key) {
  QFT_CHECK(j[key].is_number(), "{}: \"{}\" must be a number, got {}", file, key, json::excerpt(j[key]));
  return j[key].get<double>();
}

int64_t integer(const nlohmann::json& j, const std::string& file, const char* key) {
  QFT_CHECK(j[key].is_number_integer(), "{}: \"{}\" must be an integer, got {}", file, key, json::excerpt(j[key]));
  return j[key].get<int64_t>();
}

// eos_token_id: an integer or a list of integers, in config.json and generation_config.json alike.
std::vector<int64_t> token_ids(const nlohmann::json& j, const std::string& file, const char* key) {
  const nlohmann::json& v = j[key];
  std::vector<int64_t> ids;
  if (v.is_number_integer()) return {v.get<int64_t>()};
  QFT_CHECK(v.is_array(), "{}: \"{}\" must be an integer or a list of integers, got {}", file, key, json::excerpt(v));
  for (const auto& e : v) {
    QFT_CHECK(e.is_number_integer(), "{}: \"{}\" must be an integer or a list of integers, got {}", file, key,
              v.dump());
    ids.push_back(e.get<int64_t>());
  }
  return ids;
}

nlohmann::json read_json(const std::string& path) { return json::parse_file(path); }

}  // namespace

void validate(const SamplingOptions& o, const std::string& context) {
  QFT_CHECK(o.temperature > 0, "{}: temperature must be > 0, got {}", context, o.temperature);
  QFT_CHECK(o.top_k >= 0, "{}: top_k must be >= 0 (0 disables it), got {}", context, o.top_k);
  QFT_CHECK(o.top_p > 0 && o.top_p <= 1, "{}: top_p must be in (0, 1], got {}", context, o.top_p);
  QFT_CHECK(!o.min_p || (*o.min_p >= 0 && *o.min_p <= 1), "{}: min_p must be in [0, 1], got {}", context,
            o.min_p.value_or(0));
  QFT_CHECK(o.repetition_penalty > 0, "{}: repetition_penalty must be > 0, got {}", context, o.repetition_penalty);
}

GenerationDefaults read_generation_defaults(const std::string& model_dir) {
  namespace fs = std::filesystem;
  GenerationDefaults d;
  const std::string config_path = (fs::path(model_dir) / "config.json").string();
  const nlohmann::json config = read_json(config_path);
  if (has(config, "eos_token_id")) d.eos_token_ids = token_ids(config, config_path, "eos_token_id");

  const std::string path = (fs::path(model_dir) / "generation_config.json").string();
  if (!fs::exists(path)) return d;
  const nlohmann::json g = read_json(path);
  QFT_CHECK(g.is_object(), "{}: must be a JSON object", path);
  SamplingOptions& s = d.sampling;
  if (has(g, "do_sample")) {
    QFT_CHECK(g["do_sample"].is_boolean(), "{}: \"do_sample\" must be true or false, got {}", path,
              g["do_sample"].dump());
    s.do_sample = g["do_sample"].get<bool>();
  }
  if (has(g, "temperature")) s.temperature = number(g, path, "temperature");
  if (has(g, "top_k")) s.top_k = integer(g, path, "top_k");
  if (has(g, "top_p")) s.top_p = number(g, path, "top_p");
  if (has(g, "min_p")) s.min_p = number(g, path, "min_p");
  if (has(g, "repetition_penalty")) s.repetition_penalty = number(g, path, "repetition_penalty");
  if (has(g, "max_new_tokens")) d.max_new_tokens = integer(g, path, "max_new_tokens");
  if (has(g, "max_length")) d.max_length = integer(g, path, "max_length");
  if (has(g, "eos_token_id")) d.eos_token_ids = token_ids(g, path, "eos_token_id");
  validate(s, path);
  return d;
}

at::Tensor process_logits(const at::Tensor& logits, const at::Tensor& seen, const SamplingOptions& o) {
  QFT_CHECK(logits.dim() == 2, "process_logits: logits must be [B, V]");
  const int64_t V = logits.size(1);
  at::Tensor s = logits;
  // RepetitionPenaltyLogitsProcessor: a held token's score is divided by the penalty when positive and
  // multiplied when negative (so a penalty > 1 always lowers it).
  if (o.repetition_penalty != 1.0) {
    QFT_CHECK(seen.defined() && seen.sizes() == logits.sizes(), "process_logits: `seen` must be [B, V] like logits");
    s = at::where(seen, at::where(s < 0, s * o.repetition_penalty, s / o.repetition_penalty), s);
  }
  if (!o.do_sample) return s;
  // The warpers, in transformers' order: temperature, top-k, top-p, min-p.
  if (o.temperature != 1.0) s = s / o.temperature;
  if (o.top_k != 0) {
    const int64_t k = std::min(o.top_k, V);
    const at::Tensor kth = std::get<0>(at::topk(s, k, -1)).narrow(-1, k - 1, 1);
    s = s.masked_fill(s < kth, -kInf);
  }
  if (o.top_p < 1.0) {
    const auto [sorted, order] = at::sort(s, -1, /*descending=*/false);
    at::Tensor remove = sorted.softmax(-1).cumsum(-1) <= (1.0 - o.top_p);
    remove.narrow(-1, V - 1, 1).fill_(false);  // min_tokens_to_keep = 1: the most likely token stays
    s = s.masked_fill(remove.scatter(1, order, remove), -kInf);
  }
  if (o.min_p) {
    const at::Tensor probs = s.softmax(-1);
    at::Tensor remove = probs < probs.amax(-1, /*keepdim=*/true) * *o.min_p;
    remove.scatter_(-1, std::get<1>(at::topk(probs, 1, -1)), false);
    s = s.masked_fill(remove, -kInf);
  }
  return s;
}

RowRandom::RowRandom(uint64_t seed, uint64_t row)
    : state_(splitmix64_mix(splitmix64_mix(seed + kSplitMix64Increment) ^ (row + 1))) {}

double RowRandom::uniform() {
  state_ += kSplitMix64Increment;
  return static_cast<double>(splitmix64_mix(state_) >> 11) * 0x1.0p-53;
}

std::vector<int64_t> choose_tokens(const at::Tensor& scores, bool do_sample, const std::vector<double>& u) {
  const int64_t B = scores.size(0), V = scores.size(1);
  at::Tensor chosen;
  if (!do_sample) {
    chosen = scores.argmax(-1);
  } else {
    QFT_CHECK(static_cast<int64_t>(u.size()) == B, "choose_tokens: {} draws for {} rows", u.size(), B);
    // Inverse CDF: the first token whose cumulative probability exceeds u * total. Filtered tokens
    // (probability 0) never exceed their predecessor, so they are never chosen.
    const at::Tensor cdf = scores.softmax(-1).to(at::kDouble).cumsum(-1);
    const at::Tensor target =
        at::tensor(u, at::TensorOptions().dtype(at::kDouble)).to(scores.device()).unsqueeze(1) * cdf.narrow(1, V - 1, 1);
    chosen = at::searchsorted(cdf, target, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(V - 1);
  }
  const at::Tensor host = chosen.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + B);
}

}  // namespace qft::generate
