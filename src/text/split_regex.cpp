#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/split_regex.h"

#include <pcre2.h>

#include <utility>

#include "core/error.h"

namespace qft::text {
namespace {

std::string pcre2_message(int error_code) {
  PCRE2_UCHAR buffer[256];
  const int length = pcre2_get_error_message(error_code, buffer, sizeof(buffer));
  if (length < 0) return "PCRE2 error " + std::to_string(error_code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

// Per-thread PCRE2 state: match data (one ovector pair is all Split needs) and a JIT stack large
// enough for long whitespace/letter runs. Independent of the pattern, so one set serves all.
struct ThreadMatchState {
  pcre2_match_data* match_data = nullptr;
  pcre2_match_context* match_context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;

  ThreadMatchState() {
    match_data = pcre2_match_data_create(1, nullptr);
    match_context = pcre2_match_context_create(nullptr);
    jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    if (!match_data || !match_context || !jit_stack) fail("PCRE2: out of memory creating match data");
    pcre2_jit_stack_assign(match_context, nullptr, jit_stack);
    // The default limit (10 million backtracking steps) stops `\s+(?!\S)` on a run of ~10 MB of
    // spaces, which `tokenizers` encodes fine. Pre-tokenizer patterns are linear in the run length,
    // so the limit only has to exceed any text size.
    pcre2_set_match_limit(match_context, UINT32_MAX);
  }
  ~ThreadMatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(match_context);
    pcre2_match_data_free(match_data);
  }
};

ThreadMatchState& thread_match_state() {
  thread_local ThreadMatchState state;
  return state;
}

}  // namespace

#include "text/split_regex_classes.inc"

std::string translate_oniguruma_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 1024);
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char next = pattern[++i];
      if (next == 'p' && (pattern.substr(i + 1, 3) == "{L}" || pattern.substr(i + 1, 3) == "{N}")) {
        // Oniguruma's Unicode is newer: add the letters/numbers PCRE2's tables do not have yet.
        const char* extra = pattern[i + 2] == 'L' ? kExtraLetterRanges : kExtraNumberRanges;
        const std::string property = std::string("\\p") + std::string(pattern.substr(i + 1, 3));
        out += in_class ? property + extra : "[" + property + extra + "]";
        i += 3;
      } else if ((next == 'P' || next == 'p') && i + 1 < pattern.size() && pattern[i + 1] != '{') {
        fail("pre-tokenizer regex: write \\{}{{...}} with braces (at pattern offset {})", next, i - 1);
      } else if (next == 'P' && (pattern.substr(i + 1, 3) == "{L}" || pattern.substr(i + 1, 3) == "{N}")) {
        fail("pre-tokenizer regex: \\P{{L}} / \\P{{N}} are not supported (at pattern offset {}); use [^\\p{{L}}]",
             i - 1);
      } else {
        out += c;
        out += next;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t close = pattern.find(":]", i + 2);
      if (close != std::string_view::npos) {
        out.append(pattern.substr(i, close + 2 - i));
        i = close + 1;
        continue;
      }
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

SplitRegex::SplitRegex(const std::string& pattern, const std::string& where) : where_(where) {
  const std::string translated = translate_oniguruma_pattern(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (!code) {
    fail("{}: cannot compile the pre-tokenizer regex (translated to PCRE2: '{}'): {} at offset {}", where, translated,
         pcre2_message(error_code), error_offset);
  }
  code_ = code;
  // Without JIT (a PCRE2 built without it) matching still works, only slower.
  jit_compiled_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
}

SplitRegex::SplitRegex(SplitRegex&& other) noexcept
    : code_(std::exchange(other.code_, nullptr)), jit_compiled_(other.jit_compiled_), where_(std::move(other.where_)) {}

SplitRegex& SplitRegex::operator=(SplitRegex&& other) noexcept {
  if (this != &other) {
    if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
    code_ = std::exchange(other.code_, nullptr);
    jit_compiled_ = other.jit_compiled_;
    where_ = std::move(other.where_);
  }
  return *this;
}

SplitRegex::~SplitRegex() {
  if (code_) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void SplitRegex::split(std::string_view text, std::vector<ByteSpan>& pieces) const {
  auto* code = static_cast<pcre2_code*>(code_);
  ThreadMatchState& state = thread_match_state();
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  const size_t size = text.size();
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(state.match_data);
  size_t search_from = 0;
  size_t last_end = 0;
  while (search_from <= size) {
    // The caller validated the UTF-8 once; re-checking on each call would make splitting quadratic.
    const int rc = jit_compiled_
                       ? pcre2_jit_match(code, subject, size, search_from, PCRE2_NO_UTF_CHECK, state.match_data,
                                         state.match_context)
                       : pcre2_match(code, subject, size, search_from, PCRE2_NO_UTF_CHECK, state.match_data,
                                     state.match_context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      fail("{}: pre-tokenizer regex failed at byte offset {} of a {}-byte text piece: {}", where_, search_from, size,
           pcre2_message(rc));
    }
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    if (end == begin) {
      if (begin >= size) break;
      // Step over one whole UTF-8 character.
      search_from = begin + 1;
      while (search_from < size && (static_cast<unsigned char>(text[search_from]) & 0xC0) == 0x80) ++search_from;
      continue;
    }
    if (begin > last_end) pieces.push_back({static_cast<uint32_t>(last_end), static_cast<uint32_t>(begin)});
    pieces.push_back({static_cast<uint32_t>(begin), static_cast<uint32_t>(end)});
    last_end = end;
    search_from = end;
  }
  if (last_end < size) pieces.push_back({static_cast<uint32_t>(last_end), static_cast<uint32_t>(size)});
}

}  // namespace qft::text
