#include "text/added_tokens.h"

#include <algorithm>
#include <cstring>

#include "text/utf8.h"
#include "text/word_characters.h"

namespace qft::text {

AddedTokenMatcher::AddedTokenMatcher(std::vector<const AddedToken*> tokens) : tokens_(std::move(tokens)) {
  by_first_byte_.resize(256);
  for (const AddedToken* token : tokens_) {
    by_first_byte_[static_cast<unsigned char>(token->content[0])].push_back(token);
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [](const AddedToken* a, const AddedToken* b) {
      return a->content.size() > b->content.size();
    });
  }
}

const AddedToken* AddedTokenMatcher::longest_match_at(std::string_view text, size_t pos, size_t end) const {
  for (const AddedToken* token : by_first_byte_[static_cast<unsigned char>(text[pos])]) {
    const std::string& content = token->content;
    if (content.size() <= end - pos && std::memcmp(text.data() + pos, content.data(), content.size()) == 0) {
      return token;
    }
  }
  return nullptr;
}

void AddedTokenMatcher::split(std::string_view text, uint32_t begin, uint32_t end,
                              std::vector<TextSegment>& segments) const {
  size_t segment_start = begin;  // start of the text not yet emitted
  size_t pos = begin;
  while (pos < end) {
    const auto& candidates = by_first_byte_[static_cast<unsigned char>(text[pos])];
    if (candidates.empty()) {
      ++pos;
      continue;
    }
    const AddedToken* token = longest_match_at(text, pos, end);
    if (!token) {
      ++pos;
      continue;
    }
    size_t match_begin = pos;
    size_t match_end = pos + token->content.size();
    if (token->single_word) {
      // Only whole words: no word character may touch the match on either side.
      const bool word_before = match_begin > begin && ends_with_word_character(text.substr(begin, match_begin - begin));
      const bool word_after = match_end < end && starts_with_word_character(text.substr(match_end, end - match_end));
      if (word_before || word_after) {
        ++pos;
        continue;
      }
    }
    if (token->lstrip) {
      // Swallow the whitespace before the token, but never text that was already emitted.
      size_t strip = match_begin;
      while (strip > segment_start) {
        size_t char_begin = strip - 1;
        while (char_begin > segment_start && (static_cast<unsigned char>(text[char_begin]) & 0xC0) == 0x80) --char_begin;
        size_t decode_pos = char_begin;
        if (!utf8::is_white_space(utf8::decode(text, decode_pos))) break;
        strip = char_begin;
      }
      match_begin = strip;
    }
    if (token->rstrip) {
      while (match_end < end) {
        size_t decode_pos = match_end;
        if (!utf8::is_white_space(utf8::decode(text, decode_pos))) break;
        match_end = decode_pos;
      }
    }
    if (match_begin > segment_start) {
      segments.push_back({static_cast<uint32_t>(segment_start), static_cast<uint32_t>(match_begin), -1});
    }
    segments.push_back({static_cast<uint32_t>(match_begin), static_cast<uint32_t>(match_end), token->id});
    segment_start = match_end;
    pos = match_end;
  }
  if (segment_start < end) segments.push_back({static_cast<uint32_t>(segment_start), end, -1});
}

}  // namespace qft::text
