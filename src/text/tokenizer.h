// Byte-level BPE tokenizer for Qwen2/Qwen3 `tokenizer.json` files, producing exactly the ids that
// Hugging Face `tokenizers` produces: added/special tokens are matched first, the remaining text is
// NFC-normalised, split with the Qwen pre-tokenizer regex (PCRE2, UTF + JIT), mapped to byte-level
// symbols and merged by rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text {

struct Encoding {
  std::vector<int32_t> ids;
  // Byte offset in the input of each token's first byte. Where NFC changed the text, the tokens of a
  // changed segment (a starter and the marks that combine with it) all point at the segment's start.
  std::vector<uint32_t> offsets;
};

class Tokenizer {
 public:
  // Loads tokenizer.json (throws qft::Error naming the file and the offending key).
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special/added tokens inside `text` are recognised (as HF does by default).
  std::vector<int32_t> encode(std::string_view text) const;
  Encoding encode_with_offsets(std::string_view text) const;
  // Encodes many texts on `threads` threads (0 = hardware concurrency); result order = input order.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, int threads = 0) const;

  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // -1 when the token does not exist.
  int32_t token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;
  // Largest id + 1 (regular vocabulary plus added tokens).
  int64_t vocab_size() const;

  // NFC normalisation as the tokenizer applies it (exposed so callers can normalise pieces first).
  static std::string nfc(std::string_view text);
  static bool is_nfc_quick(std::string_view text);

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace qft::text
