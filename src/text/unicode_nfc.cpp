#include "text/unicode_nfc.h"

#include <algorithm>
#include <cstring>
#include <tuple>
#include <utility>
#include <vector>

#include "text/utf8.h"

namespace qft::text::unicode {

size_t next_segment_boundary(std::string_view text, size_t pos);
namespace {

struct DecompositionEntry {
  uint32_t code_point;
  uint16_t pool_offset;
  uint8_t length;
};

struct CompositionEntry {
  uint32_t first;
  uint32_t second;
  uint32_t composite;
};

#include "text/unicode_tables.inc"

constexpr uint16_t kCombiningClassMask = 0xFF;
constexpr int kQuickCheckShift = 8;
constexpr uint16_t kHasDecompositionBit = 1u << 10;

// Hangul syllables are composed and decomposed arithmetically (Unicode §3.12).
constexpr uint32_t kHangulSBase = 0xAC00, kHangulLBase = 0x1100, kHangulVBase = 0x1161, kHangulTBase = 0x11A7;
constexpr uint32_t kHangulLCount = 19, kHangulVCount = 21, kHangulTCount = 28;
constexpr uint32_t kHangulNCount = kHangulVCount * kHangulTCount, kHangulSCount = kHangulLCount * kHangulNCount;

inline uint16_t properties(uint32_t cp) {
  if (cp >= kPropertyTableLimit) return 0;
  return kPropertyStage2[kPropertyStage1[cp / kPropertyBlockSize] * kPropertyBlockSize + cp % kPropertyBlockSize];
}

inline uint8_t combining_class_of(uint16_t props) { return static_cast<uint8_t>(props & kCombiningClassMask); }
inline QuickCheck quick_check_of(uint16_t props) {
  return static_cast<QuickCheck>((props >> kQuickCheckShift) & 3);
}

void append_decomposition(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kHangulSBase && cp < kHangulSBase + kHangulSCount) {
    const uint32_t index = cp - kHangulSBase;
    out.push_back(kHangulLBase + index / kHangulNCount);
    out.push_back(kHangulVBase + (index % kHangulNCount) / kHangulTCount);
    if (index % kHangulTCount != 0) out.push_back(kHangulTBase + index % kHangulTCount);
    return;
  }
  if (!(properties(cp) & kHasDecompositionBit)) {
    out.push_back(cp);
    return;
  }
  const auto* end = kDecompositions + sizeof(kDecompositions) / sizeof(kDecompositions[0]);
  const auto* it = std::lower_bound(kDecompositions, end, cp,
                                    [](const DecompositionEntry& e, uint32_t key) { return e.code_point < key; });
  // The has-decomposition bit and the sorted list come from the same generator run.
  out.insert(out.end(), kDecompositionPool + it->pool_offset, kDecompositionPool + it->pool_offset + it->length);
}

// The primary composite of (first, second), or 0 when the pair does not compose.
uint32_t compose_pair(uint32_t first, uint32_t second) {
  if (first >= kHangulLBase && first < kHangulLBase + kHangulLCount && second >= kHangulVBase &&
      second < kHangulVBase + kHangulVCount) {
    return kHangulSBase + ((first - kHangulLBase) * kHangulVCount + (second - kHangulVBase)) * kHangulTCount;
  }
  if (first >= kHangulSBase && first < kHangulSBase + kHangulSCount && (first - kHangulSBase) % kHangulTCount == 0 &&
      second > kHangulTBase && second < kHangulTBase + kHangulTCount) {
    return first + (second - kHangulTBase);
  }
  const auto* end = kCompositions + sizeof(kCompositions) / sizeof(kCompositions[0]);
  const auto* it = std::lower_bound(kCompositions, end, std::make_pair(first, second),
                                    [](const CompositionEntry& e, const std::pair<uint32_t, uint32_t>& key) {
                                      return e.first != key.first ? e.first < key.first : e.second < key.second;
                                    });
  if (it != end && it->first == first && it->second == second) return it->composite;
  return 0;
}

// Byte offset where the quick check stops being `yes`, or npos when the whole text passes.
// `safe_start` receives the offset of the last starter before that point which never combines
// with what precedes it: normalisation can restart there and leave the prefix untouched.
size_t first_non_nfc_position(std::string_view text, size_t& safe_start) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t size = text.size();
  size_t pos = 0;
  uint8_t last_class = 0;
  safe_start = 0;
  while (pos < size) {
    if (pos + 8 <= size) {
      uint64_t word;
      std::memcpy(&word, s + pos, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        pos += 8;
        safe_start = pos - 1;
        last_class = 0;
        continue;
      }
    }
    const size_t start = pos;
    const uint32_t cp = utf8::decode(text, pos);
    const uint16_t props = properties(cp);
    const uint8_t klass = combining_class_of(props);
    const QuickCheck qc = quick_check_of(props);
    if (qc != QuickCheck::yes || (klass != 0 && klass < last_class)) return start;
    if (klass == 0) safe_start = start;
    last_class = klass;
  }
  return std::string_view::npos;
}

// NFC of `text` appended to `out`. With `anchors`, one anchor per output character giving the input
// offset it is aligned with, as `tokenizers` aligns normalised text: output characters take the input
// characters in order; a composite takes as many as went into it (it is aligned with the first), a
// character a decomposition added takes none (aligned with the one before), so a reordered mark is
// aligned by position, not with where it came from.
void normalize_into(std::string_view text, size_t text_offset, std::string& out, std::vector<OffsetAnchor>* anchors) {
  thread_local std::vector<uint32_t> buffer;
  thread_local std::vector<uint32_t> weight;  // input characters each buffer entry stands for
  thread_local std::vector<uint32_t> input_starts;
  thread_local std::vector<std::pair<uint32_t, uint32_t>> run;
  buffer.clear();
  weight.clear();
  input_starts.clear();
  size_t pos = 0;
  while (pos < text.size()) {
    input_starts.push_back(static_cast<uint32_t>(text_offset + pos));
    const size_t first = buffer.size();
    append_decomposition(utf8::decode(text, pos), buffer);
    weight.resize(buffer.size(), 0);
    weight[first] = 1;
  }

  // Canonical ordering: stable sort of every run of non-starters by combining class.
  const size_t n = buffer.size();
  for (size_t i = 0; i < n;) {
    if (canonical_combining_class(buffer[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && canonical_combining_class(buffer[j]) != 0) ++j;
    if (j - i > 1) {
      run.clear();
      for (size_t k = i; k < j; ++k) run.emplace_back(buffer[k], weight[k]);
      std::stable_sort(run.begin(), run.end(), [](const auto& a, const auto& b) {
        return canonical_combining_class(a.first) < canonical_combining_class(b.first);
      });
      for (size_t k = i; k < j; ++k) std::tie(buffer[k], weight[k]) = run[k - i];
    }
    i = j;
  }

  // Canonical composition (UAX #15 reference algorithm): a character composes with the last
  // starter unless a character in between has class 0 or a class >= its own (it is "blocked").
  if (n > 0) {
    size_t starter_pos = 0;
    uint32_t starter = buffer[0];
    int last_class = canonical_combining_class(starter);
    if (last_class != 0) last_class = 256;  // text starts with a non-starter: nothing composes with it
    size_t write = 1;
    for (size_t read = 1; read < n; ++read) {
      const uint32_t cp = buffer[read];
      const int klass = canonical_combining_class(cp);
      const uint32_t composite = (last_class < klass || last_class == 0) ? compose_pair(starter, cp) : 0;
      if (composite != 0) {
        buffer[starter_pos] = composite;
        weight[starter_pos] += weight[read];
        starter = composite;
        continue;
      }
      if (klass == 0) {
        starter_pos = write;
        starter = cp;
      }
      last_class = klass;
      weight[write] = weight[read];
      buffer[write++] = cp;
    }
    buffer.resize(write);
  }
  size_t consumed = 0;  // input characters aligned so far
  for (size_t i = 0; i < buffer.size(); ++i) {
    if (anchors && !input_starts.empty()) {
      const size_t aligned = weight[i] > 0 ? consumed : (consumed > 0 ? consumed - 1 : 0);
      anchors->push_back({static_cast<uint32_t>(out.size()), input_starts[std::min(aligned, input_starts.size() - 1)], false});
    }
    consumed += weight[i];
    utf8::append(out, buffer[i]);
  }
}

bool nfc_impl(std::string_view text, std::string& out, std::vector<OffsetAnchor>* anchors) {
  // Only the segments around characters that fail the quick check are normalised; the text between
  // them is copied as it is.
  if (anchors) anchors->clear();
  size_t safe_start = 0;
  size_t problem = first_non_nfc_position(text, safe_start);
  if (problem == std::string_view::npos) return false;
  std::string normalized;
  normalized.reserve(text.size() + 16);
  size_t copied = 0;  // text[0, copied) has been written to `normalized`
  while (problem != std::string_view::npos) {
    const size_t segment_begin = copied + safe_start;
    // The problem character itself is not a boundary (it failed the check), so skip past it.
    size_t after_problem = problem;
    utf8::decode(text, after_problem);
    const size_t segment_end = next_segment_boundary(text, after_problem);
    if (anchors) anchors->push_back({static_cast<uint32_t>(normalized.size()), static_cast<uint32_t>(copied), true});
    normalized.append(text.data() + copied, segment_begin - copied);
    normalize_into(text.substr(segment_begin, segment_end - segment_begin), segment_begin, normalized, anchors);
    copied = segment_end;
    const size_t relative = first_non_nfc_position(text.substr(copied), safe_start);
    problem = relative == std::string_view::npos ? relative : copied + relative;
  }
  if (anchors) anchors->push_back({static_cast<uint32_t>(normalized.size()), static_cast<uint32_t>(copied), true});
  normalized.append(text.data() + copied, text.size() - copied);
  if (normalized == text) return false;  // only `maybe`s that turned out to be NFC already
  out = std::move(normalized);
  return true;
}

}  // namespace

uint8_t canonical_combining_class(uint32_t code_point) { return combining_class_of(properties(code_point)); }

const char* table_unicode_version() { return kUnicodeVersion; }

QuickCheck nfc_quick_check(std::string_view text) {
  size_t pos = 0;
  uint8_t last_class = 0;
  QuickCheck result = QuickCheck::yes;
  while (pos < text.size()) {
    const uint32_t cp = utf8::decode(text, pos);
    const uint16_t props = properties(cp);
    const uint8_t klass = combining_class_of(props);
    if (klass != 0 && klass < last_class) return QuickCheck::no;
    const QuickCheck qc = quick_check_of(props);
    if (qc == QuickCheck::no) return QuickCheck::no;
    if (qc == QuickCheck::maybe) result = QuickCheck::maybe;
    last_class = klass;
  }
  return result;
}

// Offset of the first character at or after `pos` that starts a new normalisation segment: class 0
// and quick check Yes, so nothing before it can reorder or compose with it (UAX #15 §9.1), or the
// end of the text.
size_t next_segment_boundary(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    size_t next = pos;
    const uint16_t props = properties(utf8::decode(text, next));
    if (combining_class_of(props) == 0 && quick_check_of(props) == QuickCheck::yes) return pos;
    pos = next;
  }
  return text.size();
}

bool nfc_if_changed(std::string_view text, std::string& out) { return nfc_impl(text, out, nullptr); }

bool nfc_if_changed(std::string_view text, std::string& out, std::vector<OffsetAnchor>& anchors) {
  return nfc_impl(text, out, &anchors);
}

uint32_t original_offset(const std::vector<OffsetAnchor>& anchors, uint32_t offset) {
  auto it = std::upper_bound(anchors.begin(), anchors.end(), offset,
                             [](uint32_t value, const OffsetAnchor& a) { return value < a.normalized; });
  if (it == anchors.begin()) return offset;
  --it;
  return it->copied ? it->original + (offset - it->normalized) : it->original;
}

std::string nfc(std::string_view text) {
  std::string out;
  if (!nfc_if_changed(text, out)) return std::string(text);
  return out;
}

}  // namespace qft::text::unicode
