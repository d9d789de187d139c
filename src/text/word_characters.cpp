#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/word_characters.h"

#include <pcre2.h>

#include "core/error.h"

namespace qft::text {
namespace {

// One character: Alphabetic (a PCRE2 >= 10.40 binary property) or any Numeric category, or '_'.
const pcre2_code* word_character_regex() {
  static const pcre2_code* code = [] {
    const char pattern[] = "^[\\p{Alphabetic}\\p{N}_]$";
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    pcre2_code* compiled = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                         PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
    if (!compiled) fail("PCRE2 cannot compile the word-character class (PCRE2 10.40 or newer is needed)");
    return compiled;
  }();
  return code;
}

struct ThreadMatchData {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  ~ThreadMatchData() { pcre2_match_data_free(data); }
};

bool is_word_character(std::string_view one_character) {
  thread_local ThreadMatchData match_data;
  QFT_CHECK(match_data.data, "PCRE2: out of memory creating match data");
  const int rc = pcre2_match(word_character_regex(), reinterpret_cast<PCRE2_SPTR>(one_character.data()),
                             one_character.size(), 0, PCRE2_NO_UTF_CHECK, match_data.data, nullptr);
  return rc >= 0;
}

size_t character_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

}  // namespace

bool starts_with_word_character(std::string_view text) {
  return is_word_character(text.substr(0, character_length(static_cast<unsigned char>(text[0]))));
}

bool ends_with_word_character(std::string_view text) {
  size_t begin = text.size() - 1;
  while (begin > 0 && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
  return is_word_character(text.substr(begin));
}

}  // namespace qft::text
