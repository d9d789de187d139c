// Answer extraction for generation-based evaluation (`qft-dist eval --generate`): the part of a generated
// text after its <think> block, the answer a rule reads out of it, and whether that answer equals the
// reference. Pure string logic (ASCII rules, byte-wise on UTF-8), no libtorch: tested in qft_text_tests,
// and tests/reference/test_eval_generate.py re-implements the same rules in Python as the oracle.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace qft::text {

enum class AnswerRule { kLastNumber, kBoxed, kExact, kChoice };

// "last_number" | "boxed" | "exact" | "choice"; nullopt for anything else.
std::optional<AnswerRule> parse_answer_rule(std::string_view name);
const char* answer_rule_name(AnswerRule rule);

struct ThinkingSplit {
  std::string answer;          // the text with the thinking block removed
  bool used_thinking = false;  // the block holds more than whitespace
};
// The first "<think>...</think>" is removed (an unclosed "<think>" runs to the end: no answer); a
// "</think>" with no "<think>" before it (templates that open the block in the prompt) ends a block that
// starts at the beginning of the text.
ThinkingSplit split_thinking(std::string_view text);

// Whitespace runs (space, \t, \n, \r, \f, \v) collapsed to one space, trimmed, ASCII letters lower-cased,
// then trailing ". , ; : ! ?" and spaces stripped.
std::string normalize_answer(std::string_view text);

// The last number in the text, commas removed: an optional '-', digits (or 1-3 digits then ",ddd" groups:
// "1,000"), an optional ".digits". A number does not start right after a letter, digit, '_' or '.' ("x2",
// "3-5" gives 5). Python: re.finditer(r"(?<![0-9A-Za-z_.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)
// (?:\.[0-9]+)?").
std::optional<std::string> last_number(std::string_view text);
// The value of a text that is one number as last_number reads it (surrounding whitespace allowed).
std::optional<double> parse_number(std::string_view text);

// Content of the last "\boxed{" (by position) whose braces balance; nested braces are kept.
std::optional<std::string> last_boxed(std::string_view text);

// A choice letter A-J: the last "answer [is] [:] [(]X" (case-insensitive cue and letter, the letter not
// followed by a letter, digit or '_'), else the last standalone capital A-J (no letter, digit or '_' on
// either side: "(B)", "B.", "Answer: B"). Upper case.
std::optional<char> last_choice(std::string_view text);

// What `rule` extracts from the answer part of a generation (split_thinking(...).answer): the number
// (commas removed), the boxed content, the normalized text (exact: always present) or the letter.
std::optional<std::string> extract_answer(AnswerRule rule, std::string_view answer_text);

// Checks a reference answer (a JSON string, or a number already written as text) for the rule and returns
// its canonical form; throws qft::Error "expected ..." (the caller adds FILE:LINE) when it cannot match:
// last_number needs one number, choice one letter A-J (optionally "(B)" or "B."), exact and boxed a
// non-empty text.
std::string canonical_reference(AnswerRule rule, std::string_view reference);

// Whether an extracted answer equals the canonical reference: numbers within 1e-6 relative (absolute
// below 1); boxed content by normalize_answer, or numerically when both are numbers; exact by
// normalize_answer; letters by equality.
bool answer_matches(AnswerRule rule, const std::optional<std::string>& extracted, const std::string& reference);

}  // namespace qft::text
