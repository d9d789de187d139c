// Generation as the commands use it: loading a model directory (+ PEFT adapter) for inference, the
// flags `chat` and `generate` share, the prefill + decode loop over a batch of prompts, and incremental
// detokenization for streaming (never half a UTF-8 character; <think> blocks told apart).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "generate/decode.h"
#include "generate/sampler.h"
#include "model/lora.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"
#include "text/tokenizer.h"

namespace qft::generate {

struct GenerationOptions {
  SamplingOptions sampling;
  int64_t max_new_tokens = 512;
  std::vector<int64_t> stop_ids;  // a row stops after emitting one of these (kept as its last token)
};

struct Completion {
  std::vector<int32_t> tokens;  // generated ids, the stop token included when the row stopped
  bool stopped = false;         // ended at a stop id (else at max_new_tokens)
  int64_t prompt_tokens = 0;
};

// Prefill of all prompts in one block (right-padded, per-row lengths), then one token per step for
// every row until each row has stopped or max_new_tokens. Row i samples from RowRandom(seed,
// stream_ids[i]), so a sampled answer does not depend on which other prompts share its batch.
// on_token(row, id) is called as each token is chosen (not for rows that already stopped).
std::vector<Completion> generate_batch(Decoder& decoder, const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<uint64_t>& stream_ids, const GenerationOptions& options,
                                       const std::function<void(size_t row, int32_t id)>& on_token = {});

// The flags of `chat` and `generate` that choose the model and how it generates.
struct ModelFlags {
  std::string model_dir, adapter_dir;
  std::string device = "auto";  // auto | cpu | cuda[:N]
  std::string dtype;            // "" = fp32 on CPU, bf16 on CUDA
  std::optional<bool> do_sample;
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k, max_new_tokens;
  uint64_t seed = 0;
};
// When args[i] is one of the shared flags, consumes it (and its value: i advances) and returns true.
// Bad values are errors naming `command` and the flag.
bool parse_model_flag(const std::string& command, const std::vector<std::string>& args, size_t& i, ModelFlags& flags);
// The usage lines for the shared flags.
const char* model_flags_usage();

// Everything generation needs, loaded once.
struct LoadedModel {
  model::Qwen3Config config;
  std::unique_ptr<model::Qwen3Weights> weights;  // stable address: the decoder refers to it
  std::optional<model::LoraWeights> lora;
  std::unique_ptr<text::Tokenizer> tokenizer;
  GenerationDefaults defaults;
  std::unique_ptr<Decoder> decoder;
  std::vector<bool> decodable;  // ids the tokenizer has a token for (see decode_generated)

  // The model's defaults overridden by the flags. max_new_tokens: the flag, else generation_config.json's
  // max_new_tokens, else its max_length minus `longest_prompt`, else 512. Stop ids: the model's eos ids
  // and <|im_end|> (every chat turn ends with it).
  GenerationOptions options(const ModelFlags& flags, int64_t longest_prompt) const;
};
LoadedModel load_model(const std::string& command, const ModelFlags& flags);

// Which ids the tokenizer can decode: the embedding has rows past the tokenizer's last token (151,936 rows,
// 151,669 tokens in Qwen3), which a model can still emit.
std::vector<bool> decodable_ids(const text::Tokenizer& tokenizer);
// Text of generated ids, leaving out ids with no token, as HF tokenizers' decode does.
std::string decode_generated(const text::Tokenizer& tokenizer, const std::vector<bool>& decodable,
                             const std::vector<int32_t>& ids);

// Turns generated ids into text as they arrive. Byte-level BPE tokens may end inside a UTF-8 character;
// the text of such a tail (decoded as U+FFFD) is held back until the character completes.
class TextStream {
 public:
  TextStream(const text::Tokenizer& tokenizer, const std::vector<bool>& decodable)
      : tokenizer_(tokenizer), decodable_(decodable) {}
  std::string push(int32_t id);  // text that became final with this token
  std::string finish();          // whatever is held back

 private:
  const text::Tokenizer& tokenizer_;
  const std::vector<bool>& decodable_;
  std::vector<int32_t> window_;  // ids since the last point where all their text was emitted
  size_t emitted_ = 0;           // bytes of window_'s text already returned
};

// Splits streamed text into thinking (the <think>...</think> block, tags included) and answer pieces,
// holding back a tail that may be the start of a tag.
class ThinkSplitter {
 public:
  struct Piece {
    std::string text;
    bool thinking = false;
  };
  std::vector<Piece> push(std::string_view text);
  std::vector<Piece> finish();

 private:
  std::string pending_;
  bool thinking_ = false;
};

}  // namespace qft::generate
