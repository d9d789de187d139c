#include "text/answer_extraction.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "core/error.h"

namespace qft::text {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_word(char c) { return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
char to_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

std::string_view trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

// End of the number starting at `begin` (a '-' or a digit), or npos. The regex's alternatives: 1-3 digits
// then one or more ",ddd" groups not followed by a digit, else a digit run; then an optional ".digits".
size_t number_end(std::string_view s, size_t begin) {
  size_t i = begin;
  if (s[i] == '-') ++i;
  if (i >= s.size() || !is_digit(s[i])) return std::string_view::npos;
  size_t run = i;
  while (run < s.size() && is_digit(s[run])) ++run;
  size_t end = run;
  if (run - i <= 3) {
    std::vector<size_t> group_ends;
    size_t j = run;
    while (j + 3 < s.size() && s[j] == ',' && is_digit(s[j + 1]) && is_digit(s[j + 2]) && is_digit(s[j + 3])) {
      j += 4;
      group_ends.push_back(j);
    }
    // (?![0-9]) after the groups: backtracking drops the last group when a digit follows it.
    while (!group_ends.empty() && group_ends.back() < s.size() && is_digit(s[group_ends.back()])) group_ends.pop_back();
    if (!group_ends.empty()) end = group_ends.back();
  }
  if (end + 1 < s.size() && s[end] == '.' && is_digit(s[end + 1])) {
    end += 1;
    while (end < s.size() && is_digit(s[end])) ++end;
  }
  return end;
}

bool number_may_start(std::string_view s, size_t i) { return i == 0 || !(is_word(s[i - 1]) || s[i - 1] == '.'); }

std::string without_commas(std::string_view s) {
  std::string out;
  for (char c : s)
    if (c != ',') out += c;
  return out;
}

}  // namespace

std::optional<AnswerRule> parse_answer_rule(std::string_view name) {
  if (name == "last_number") return AnswerRule::kLastNumber;
  if (name == "boxed") return AnswerRule::kBoxed;
  if (name == "exact") return AnswerRule::kExact;
  if (name == "choice") return AnswerRule::kChoice;
  return std::nullopt;
}

const char* answer_rule_name(AnswerRule rule) {
  switch (rule) {
    case AnswerRule::kLastNumber: return "last_number";
    case AnswerRule::kBoxed: return "boxed";
    case AnswerRule::kExact: return "exact";
    case AnswerRule::kChoice: return "choice";
  }
  return "?";
}

ThinkingSplit split_thinking(std::string_view text) {
  constexpr std::string_view kOpen = "<think>", kClose = "</think>";
  const size_t open = text.find(kOpen);
  const size_t close = text.find(kClose);
  ThinkingSplit out;
  std::string_view thinking;
  if (open != std::string_view::npos && (close == std::string_view::npos || open < close)) {
    const size_t end = text.find(kClose, open + kOpen.size());
    thinking = text.substr(open + kOpen.size(), end == std::string_view::npos ? std::string_view::npos
                                                                                : end - open - kOpen.size());
    out.answer = std::string(text.substr(0, open));
    if (end != std::string_view::npos) out.answer += text.substr(end + kClose.size());
  } else if (close != std::string_view::npos) {
    thinking = text.substr(0, close);
    out.answer = std::string(text.substr(close + kClose.size()));
  } else {
    out.answer = std::string(text);
  }
  out.used_thinking = !trim(thinking).empty();
  return out;
}

std::string normalize_answer(std::string_view text) {
  std::string out;
  bool pending_space = false;
  for (char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out += ' ';
    pending_space = false;
    out += to_lower(c);
  }
  while (!out.empty() && std::string_view(".,;:!? ").find(out.back()) != std::string_view::npos) out.pop_back();
  return out;
}

std::optional<std::string> last_number(std::string_view text) {
  std::optional<std::string> last;
  size_t i = 0;
  while (i < text.size()) {
    if ((text[i] == '-' || is_digit(text[i])) && number_may_start(text, i)) {
      const size_t end = number_end(text, i);
      if (end != std::string_view::npos) {
        last = without_commas(text.substr(i, end - i));
        i = end;
        continue;
      }
    }
    ++i;
  }
  return last;
}

std::optional<double> parse_number(std::string_view text) {
  const std::string_view t = trim(text);
  if (t.empty() || !(t[0] == '-' || is_digit(t[0])) || number_end(t, 0) != t.size()) return std::nullopt;
  return std::strtod(without_commas(t).c_str(), nullptr);
}

std::optional<std::string> last_boxed(std::string_view text) {
  constexpr std::string_view kBoxed = "\\boxed{";
  std::optional<std::string> last;
  for (size_t at = text.find(kBoxed); at != std::string_view::npos; at = text.find(kBoxed, at + 1)) {
    const size_t begin = at + kBoxed.size();
    int depth = 1;
    size_t i = begin;
    for (; i < text.size() && depth > 0; ++i) {
      if (text[i] == '{') ++depth;
      else if (text[i] == '}') --depth;
    }
    if (depth == 0) last = std::string(text.substr(begin, i - 1 - begin));
  }
  return last;
}

std::optional<char> last_choice(std::string_view text) {
  auto letter_at = [&](size_t i, bool lower_ok) -> bool {
    if (i >= text.size()) return false;
    const char c = lower_ok ? to_upper(text[i]) : text[i];
    return c >= 'A' && c <= 'J' && (i + 1 >= text.size() || !is_word(text[i + 1]));
  };
  // The cue: answer\s*(?:is\s*)?:?\s*\(? then the letter, case-insensitive.
  std::optional<char> cued;
  for (size_t at = 0; at + 6 <= text.size(); ++at) {
    std::string word;
    for (size_t k = 0; k < 6; ++k) word += to_lower(text[at + k]);
    if (word != "answer") continue;
    size_t i = at + 6;
    while (i < text.size() && is_space(text[i])) ++i;
    if (i + 1 < text.size() && to_lower(text[i]) == 'i' && to_lower(text[i + 1]) == 's') {
      i += 2;
      while (i < text.size() && is_space(text[i])) ++i;
    }
    if (i < text.size() && text[i] == ':') ++i;
    while (i < text.size() && is_space(text[i])) ++i;
    if (i < text.size() && text[i] == '(') ++i;
    if (letter_at(i, true)) {
      cued = to_upper(text[i]);
      at = i;  // the next match starts after this one, as re.finditer does
    }
  }
  if (cued) return cued;
  std::optional<char> last;
  for (size_t i = 0; i < text.size(); ++i)
    if ((i == 0 || !is_word(text[i - 1])) && letter_at(i, false)) last = text[i];
  return last;
}

std::optional<std::string> extract_answer(AnswerRule rule, std::string_view answer_text) {
  switch (rule) {
    case AnswerRule::kLastNumber: return last_number(answer_text);
    case AnswerRule::kBoxed: return last_boxed(answer_text);
    case AnswerRule::kExact: return normalize_answer(answer_text);
    case AnswerRule::kChoice: {
      const std::optional<char> c = last_choice(answer_text);
      if (!c) return std::nullopt;
      return std::string(1, *c);
    }
  }
  return std::nullopt;
}

std::string canonical_reference(AnswerRule rule, std::string_view reference) {
  switch (rule) {
    case AnswerRule::kLastNumber: {
      QFT_CHECK(parse_number(reference).has_value(),
                "expected \"answer\" to be a number (or a string holding one, like \"1,000\" or \"-2.5\") for "
                "--extract last_number, got \"{}\"", reference);
      return without_commas(trim(reference));
    }
    case AnswerRule::kChoice: {
      std::string_view t = trim(reference);
      if (t.size() == 3 && t[0] == '(' && t[2] == ')') t = t.substr(1, 1);
      else if (t.size() == 2 && (t[1] == '.' || t[1] == ')')) t = t.substr(0, 1);
      const char c = t.size() == 1 ? to_upper(t[0]) : '\0';
      QFT_CHECK(c >= 'A' && c <= 'J',
                "expected \"answer\" to be one letter A-J (or \"(B)\", \"B.\") for --extract choice, got \"{}\"",
                reference);
      return std::string(1, c);
    }
    case AnswerRule::kBoxed:
    case AnswerRule::kExact: {
      std::string n = normalize_answer(reference);
      QFT_CHECK(!n.empty(), "expected \"answer\" to be a non-empty text for --extract {}, got \"{}\"",
                answer_rule_name(rule), reference);
      return n;
    }
  }
  return std::string(reference);
}

bool answer_matches(AnswerRule rule, const std::optional<std::string>& extracted, const std::string& reference) {
  if (!extracted) return false;
  auto numbers_equal = [](double a, double b) { return std::fabs(a - b) <= 1e-6 * std::max(1.0, std::fabs(b)); };
  switch (rule) {
    case AnswerRule::kLastNumber: {
      const std::optional<double> a = parse_number(*extracted), b = parse_number(reference);
      return a && b && numbers_equal(*a, *b);
    }
    case AnswerRule::kBoxed: {
      if (normalize_answer(*extracted) == normalize_answer(reference)) return true;
      const std::optional<double> a = parse_number(*extracted), b = parse_number(reference);
      return a && b && numbers_equal(*a, *b);
    }
    case AnswerRule::kExact: return normalize_answer(*extracted) == normalize_answer(reference);
    case AnswerRule::kChoice: return *extracted == reference;
  }
  return false;
}

}  // namespace qft::text
