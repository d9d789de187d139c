// Added tokens (special and non-special) are cut out of the text before normalisation and
// pre-tokenization, as `tokenizers`' AddedVocabulary does: leftmost-longest matching, with the
// `single_word`, `lstrip` and `rstrip` flags of each token honoured.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool normalized = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
};

struct TextSegment {
  uint32_t begin;
  uint32_t end;
  int32_t token_id;  // -1: plain text that still has to be normalised and split
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `tokens` must outlive the matcher; the contents must be non-empty and valid UTF-8.
  explicit AddedTokenMatcher(std::vector<const AddedToken*> tokens);

  bool empty() const { return tokens_.empty(); }

  // Appends the segments of text[begin, end) to `segments`: matched tokens and the text between.
  void split(std::string_view text, uint32_t begin, uint32_t end, std::vector<TextSegment>& segments) const;

 private:
  const AddedToken* longest_match_at(std::string_view text, size_t pos, size_t end) const;

  std::vector<const AddedToken*> tokens_;
  // For each first byte, the tokens starting with it, longest first.
  std::vector<std::vector<const AddedToken*>> by_first_byte_;
};

}  // namespace qft::text
