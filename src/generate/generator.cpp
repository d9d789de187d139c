#include "generate/generator.h"

#include <algorithm>
#include <filesystem>

#include <ATen/Context.h>
#include <c10/core/GradMode.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "hf/dtype_names.h"
#include "hf/peft_adapter.h"

namespace qft::generate {
namespace fs = std::filesystem;

std::vector<Completion> generate_batch(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<uint64_t>& stream_ids, const GenerationOptions& options,
                                       const std::function<void(size_t, int32_t)>& on_token) {
  c10::NoGradGuard no_grad;
  const int64_t B = static_cast<int64_t>(prompts.size());
  QFT_CHECK(B > 0, "generate: no prompts");
  QFT_CHECK(stream_ids.size() == prompts.size(), "generate: {} stream ids for {} prompts", stream_ids.size(), B);
  QFT_CHECK(options.max_new_tokens >= 1, "generate: max_new_tokens must be >= 1, got {}", options.max_new_tokens);
  const int64_t V = decoder.config().vocab_size;
  int64_t longest = 0;
  for (const auto& p : prompts) {
    QFT_CHECK(!p.empty(), "generate: an empty prompt (nothing to continue from)");
    longest = std::max<int64_t>(longest, static_cast<int64_t>(p.size()));
    for (int32_t id : p) QFT_CHECK(id >= 0 && id < V, "generate: token id {} is outside the model's vocabulary ({})", id, V);
  }
  // Prompt block, right-padded with each row's first id (a real token: the padding keys are never seen).
  std::vector<int64_t> block(B * longest);
  std::vector<int64_t> lengths(B);
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    lengths[b] = static_cast<int64_t>(p.size());
    for (int64_t t = 0; t < longest; ++t) block[b * longest + t] = p[t < lengths[b] ? t : 0];
  }
  const at::Tensor ids = at::tensor(block, at::TensorOptions().dtype(at::kLong)).view({B, longest});
  const at::Device dev = decoder.device();
  at::Tensor seen;  // [B, V]: tokens each row holds, for the repetition penalty
  if (options.sampling.repetition_penalty != 1.0)
    seen = at::zeros({B, V}, at::TensorOptions().dtype(at::kBool).device(dev)).scatter_(1, ids.to(dev), true);

  KvCache cache = decoder.allocate_cache(B, longest + options.max_new_tokens);
  std::vector<RowRandom> random;
  for (int64_t b = 0; b < B; ++b) random.emplace_back(options.sampling.seed, stream_ids[b]);
  std::vector<Completion> out(B);
  for (int64_t b = 0; b < B; ++b) out[b].prompt_tokens = lengths[b];
  std::vector<bool> done(B, false);
  int64_t running = B;

  at::Tensor logits = decoder.forward(cache, ids, lengths);
  const std::vector<int64_t> ones(B, 1);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    std::vector<double> u(B, 0.0);
    // Every row draws every step, finished or not, so a row's stream does not depend on the others.
    if (options.sampling.do_sample)
      for (int64_t b = 0; b < B; ++b) u[b] = random[b].uniform();
    const std::vector<int64_t> next =
        choose_tokens(process_logits(logits, seen, options.sampling), options.sampling.do_sample, u);
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      const auto id = static_cast<int32_t>(next[b]);
      out[b].tokens.push_back(id);
      if (on_token) on_token(static_cast<size_t>(b), id);
      if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next[b]) != options.stop_ids.end()) {
        out[b].stopped = true;
        done[b] = true;
        --running;
      }
    }
    if (running == 0 || step + 1 == options.max_new_tokens) break;
    const at::Tensor next_ids = at::tensor(next, at::TensorOptions().dtype(at::kLong)).view({B, 1});
    if (seen.defined()) seen.scatter_(1, next_ids.to(dev), true);
    logits = decoder.forward(cache, next_ids, ones);
  }
  return out;
}

namespace {

double parse_double(const std::string& command, const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double v = std::stod(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  fail("{}: {} '{}' is not a number", command, flag, value);
}

int64_t parse_int(const std::string& command, const std::string& flag, const std::string& value, int64_t min) {
  try {
    size_t used = 0;
    const long long v = std::stoll(value, &used);
    if (used == value.size() && v >= min) return v;
  } catch (const std::exception&) {
  }
  fail("{}: {} '{}' is not an integer >= {}", command, flag, value, min);
}

}  // namespace

bool parse_model_flag(const std::string& command, const std::vector<std::string>& args, size_t& i,
                      ModelFlags& flags) {
  const std::string& a = args[i];
  if (a == "--do-sample") {
    flags.do_sample = true;
    return true;
  }
  if (a == "--greedy") {
    flags.do_sample = false;
    return true;
  }
  static const char* const kValued[] = {"--model", "--adapter", "--device", "--dtype", "--temperature",
                                        "--top-p", "--top-k", "--min-p", "--repetition-penalty",
                                        "--max-new-tokens", "--seed"};
  if (std::find_if(std::begin(kValued), std::end(kValued), [&](const char* f) { return a == f; }) ==
      std::end(kValued))
    return false;
  QFT_CHECK(i + 1 < args.size(), "{}: {} needs a value (see qft-dist {} --help)", command, a, command);
  const std::string& v = args[++i];
  if (a == "--model") flags.model_dir = v;
  else if (a == "--adapter") flags.adapter_dir = v;
  else if (a == "--device") flags.device = v;
  else if (a == "--dtype") flags.dtype = v;
  else if (a == "--temperature") flags.temperature = parse_double(command, a, v);
  else if (a == "--top-p") flags.top_p = parse_double(command, a, v);
  else if (a == "--min-p") flags.min_p = parse_double(command, a, v);
  else if (a == "--repetition-penalty") flags.repetition_penalty = parse_double(command, a, v);
  else if (a == "--top-k") flags.top_k = parse_int(command, a, v, 0);
  else if (a == "--max-new-tokens") flags.max_new_tokens = parse_int(command, a, v, 1);
  else flags.seed = static_cast<uint64_t>(parse_int(command, a, v, 0));
  return true;
}

const char* model_flags_usage() {
  return "  --model DIR              Hugging Face Qwen3 model directory (base or merged)\n"
         "  --adapter DIR            PEFT LoRA adapter applied on the fly (not merged)\n"
         "  --device auto|cpu|cuda   default auto: cuda when available\n"
         "  --dtype bf16|fp16|fp32   default fp32 on CPU, bf16 on CUDA\n"
         "  --do-sample | --greedy   default: generation_config.json's do_sample (else greedy)\n"
         "  --temperature T          --top-k K (0: off)  --top-p P  --min-p P  --repetition-penalty R\n"
         "                           defaults from generation_config.json, else transformers' (1.0, 50, 1.0,\n"
         "                           off, 1.0); --temperature 0 means greedy\n"
         "  --max-new-tokens N       default generation_config.json's max_new_tokens, else 512\n"
         "  --seed N                 sampling seed (default 0)\n";
}

GenerationOptions LoadedModel::options(const ModelFlags& flags, int64_t longest_prompt) const {
  GenerationOptions o;
  SamplingOptions& s = o.sampling;
  s = defaults.sampling;
  if (flags.do_sample) s.do_sample = *flags.do_sample;
  if (flags.top_k) s.top_k = *flags.top_k;
  if (flags.top_p) s.top_p = *flags.top_p;
  if (flags.min_p) s.min_p = *flags.min_p;
  if (flags.repetition_penalty) s.repetition_penalty = *flags.repetition_penalty;
  if (flags.temperature) {
    if (*flags.temperature == 0.0) s.do_sample = false;  // the common spelling of greedy
    else s.temperature = *flags.temperature;
  }
  s.seed = flags.seed;
  validate(s, "sampling flags");
  if (flags.max_new_tokens) o.max_new_tokens = *flags.max_new_tokens;
  else if (defaults.max_new_tokens) o.max_new_tokens = *defaults.max_new_tokens;
  else if (defaults.max_length) o.max_new_tokens = std::max<int64_t>(1, *defaults.max_length - longest_prompt);
  o.stop_ids = defaults.eos_token_ids;
  const int32_t im_end = tokenizer->token_to_id("<|im_end|>");
  if (im_end >= 0 && std::find(o.stop_ids.begin(), o.stop_ids.end(), im_end) == o.stop_ids.end())
    o.stop_ids.push_back(im_end);
  return o;
}

LoadedModel load_model(const std::string& command, const ModelFlags& flags) {
  QFT_CHECK(!flags.model_dir.empty(), "{}: --model DIR is required (see qft-dist {} --help)", command, command);
  const fs::path dir(flags.model_dir);
  QFT_CHECK(fs::is_regular_file(dir / "config.json"), "{}: --model {}: no config.json there", command,
            flags.model_dir);
  at::Device device = at::kCPU;
  if (flags.device == "auto") {
    if (at::hasCUDA()) device = at::Device(at::kCUDA, 0);
  } else {
    try {
      device = at::Device(flags.device);
    } catch (const std::exception&) {
      fail("{}: --device '{}' is not cpu, cuda or cuda:N", command, flags.device);
    }
    QFT_CHECK(device.is_cpu() || (device.is_cuda() && at::hasCUDA()), "{}: --device {}: no CUDA device here",
              command, flags.device);
  }
  const at::ScalarType dtype = flags.dtype.empty() ? (device.is_cuda() ? at::kBFloat16 : at::kFloat)
                                                   : hf::parse_dtype(flags.dtype, command + " --dtype");
  LoadedModel m;
  m.config = model::Qwen3Config::from_file((dir / "config.json").string());
  m.defaults = read_generation_defaults(flags.model_dir);
  m.weights = std::make_unique<model::Qwen3Weights>(model::Qwen3Weights::load(flags.model_dir, m.config, dtype, device));
  if (!flags.adapter_dir.empty()) m.lora = hf::load_peft_adapter(flags.adapter_dir, m.config, device);
  // The tokenizer travels with the model; an adapter directory written by training has it too.
  fs::path tokenizer = dir / "tokenizer.json";
  if (!fs::exists(tokenizer) && !flags.adapter_dir.empty()) tokenizer = fs::path(flags.adapter_dir) / "tokenizer.json";
  QFT_CHECK(fs::exists(tokenizer), "{}: no tokenizer.json in --model {}{}", command, flags.model_dir,
            flags.adapter_dir.empty() ? "" : " or --adapter " + flags.adapter_dir);
  m.tokenizer = std::make_unique<text::Tokenizer>(text::Tokenizer::from_file(tokenizer.string()));
  m.decoder = std::make_unique<Decoder>(m.config, *m.weights, m.lora ? &*m.lora : nullptr);
  m.decodable = decodable_ids(*m.tokenizer);
  spdlog::info("{}: {} ({} layers) on {} in {}{}", command, flags.model_dir, m.config.num_hidden_layers,
               device.str(), hf::torch_dtype_name(dtype),
               flags.adapter_dir.empty() ? "" : " with adapter " + flags.adapter_dir);
  return m;
}

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD, what a cut UTF-8 character decodes to

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

}  // namespace

std::vector<bool> decodable_ids(const text::Tokenizer& tokenizer) {
  std::vector<bool> known(static_cast<size_t>(tokenizer.vocab_size()), false);
  for (size_t id = 0; id < known.size(); ++id) {
    try {
      tokenizer.id_to_token(static_cast<int32_t>(id));
      known[id] = true;
    } catch (const Error&) {  // a gap in the ids
    }
  }
  return known;
}

std::string decode_generated(const text::Tokenizer& tokenizer, const std::vector<bool>& decodable,
                             const std::vector<int32_t>& ids) {
  std::vector<int32_t> known;
  known.reserve(ids.size());
  for (int32_t id : ids)
    if (id >= 0 && static_cast<size_t>(id) < decodable.size() && decodable[id]) known.push_back(id);
  return tokenizer.decode(known);
}

std::string TextStream::push(int32_t id) {
  window_.push_back(id);
  const std::string text = decode_generated(tokenizer_, decodable_, window_);
  size_t end = text.size();
  while (end >= emitted_ + kReplacement.size() && ends_with(std::string_view(text).substr(0, end), kReplacement))
    end -= kReplacement.size();
  std::string out = end > emitted_ ? text.substr(emitted_, end - emitted_) : std::string();
  if (end == text.size()) {
    // Everything so far is final: byte-level BPE decodes tokens independently, so start a new window.
    window_.clear();
    emitted_ = 0;
  } else {
    emitted_ = std::max(emitted_, end);
  }
  return out;
}

std::string TextStream::finish() {
  std::string out = window_.empty() ? std::string() : decode_generated(tokenizer_, decodable_, window_).substr(emitted_);
  window_.clear();
  emitted_ = 0;
  return out;
}

std::vector<ThinkSplitter::Piece> ThinkSplitter::push(std::string_view text) {
  pending_.append(text);
  std::vector<Piece> out;
  for (;;) {
    const std::string_view tag = thinking_ ? "</think>" : "<think>";
    const size_t at = pending_.find(tag);
    if (at == std::string::npos) break;
    if (at > 0) out.push_back({pending_.substr(0, at), thinking_});
    out.push_back({std::string(tag), true});
    pending_.erase(0, at + tag.size());
    thinking_ = !thinking_;
  }
  // Hold back the longest tail that could start the tag being looked for.
  const std::string_view tag = thinking_ ? "</think>" : "<think>";
  size_t keep = std::min(pending_.size(), tag.size() - 1);
  while (keep > 0 && std::string_view(pending_).substr(pending_.size() - keep) != tag.substr(0, keep)) --keep;
  if (pending_.size() > keep) {
    out.push_back({pending_.substr(0, pending_.size() - keep), thinking_});
    pending_.erase(0, pending_.size() - keep);
  }
  return out;
}

std::vector<ThinkSplitter::Piece> ThinkSplitter::finish() {
  std::vector<Piece> out;
  if (!pending_.empty()) out.push_back({pending_, thinking_});
  pending_.clear();
  return out;
}

}  // namespace qft::generate
