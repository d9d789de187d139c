// What `tokenizers` counts as a word character for single_word added tokens: Rust's
// char::is_alphanumeric (Unicode Alphabetic or Numeric) or '_'.
#pragma once

#include <string_view>

namespace qft::text {

// `text` must be valid UTF-8 and non-empty.
bool starts_with_word_character(std::string_view text);
bool ends_with_word_character(std::string_view text);

}  // namespace qft::text
