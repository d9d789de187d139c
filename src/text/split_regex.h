// The pre-tokenizer Split(regex, behavior = Isolated) of `tokenizers`, run with PCRE2 (UTF + UCP,
// JIT compiled). `tokenizers` uses Oniguruma, whose Unicode is newer (16.0 in tokenizers 0.23,
// against PCRE2 10.42's 14.0), so the pattern is translated (translate_oniguruma_pattern) before
// compiling: \p{L} and \p{N} get the letters and numbers of Unicode 15-16 added
// (split_regex_classes.inc, generated). Other \p{...} properties keep PCRE2's Unicode 14.0 meaning.
// \s already agrees: with UCP it is White_Space in both (U+0085 included, U+001C-U+001F not).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text {

struct ByteSpan {
  uint32_t begin;
  uint32_t end;
};

// Rewrites the Oniguruma constructs whose meaning differs in PCRE2 (\p{L}, \p{N}); throws
// qft::Error for a construct it cannot translate (\P{L}, \P{N}, \pL without braces).
std::string translate_oniguruma_pattern(std::string_view pattern);

class SplitRegex {
 public:
  // `pattern` is the Oniguruma pattern from tokenizer.json; `where` names it in error messages.
  SplitRegex(const std::string& pattern, const std::string& where);
  SplitRegex(SplitRegex&&) noexcept;
  SplitRegex& operator=(SplitRegex&&) noexcept;
  SplitRegex(const SplitRegex&) = delete;
  SplitRegex& operator=(const SplitRegex&) = delete;
  ~SplitRegex();

  // Appends the pieces of `text` (valid UTF-8): every match and every non-empty gap between
  // matches, in order, as `Isolated` does. Empty matches produce no piece. Thread-safe.
  void split(std::string_view text, std::vector<ByteSpan>& pieces) const;

  bool jit_compiled() const { return jit_compiled_; }

 private:
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so that users need no pcre2.h
  bool jit_compiled_ = false;
  std::string where_;
};

}  // namespace qft::text
