// Unicode Normalization Form C (UAX #15) without ICU: canonical decomposition, canonical ordering
// and canonical composition driven by tables generated from Python's unicodedata
// (gen_unicode_tables.py -> unicode_tables.inc). The tables emulate Unicode 9.0, the version
// Hugging Face `tokenizers` normalises with: characters assigned later are left as they are.
// All functions expect valid UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text::unicode {

enum class QuickCheck { yes, maybe, no };

// The NFC_Quick_Check algorithm of UAX #15 over a whole string: `yes` proves the text is NFC.
QuickCheck nfc_quick_check(std::string_view text);

// When `text` is already NFC, returns false and leaves `out` alone (no copy: the hot path for
// ASCII and for pre-normalised text). Otherwise writes the NFC form to `out` and returns true.
bool nfc_if_changed(std::string_view text, std::string& out);

// Where the normalised text came from, piece by piece: from `normalized` on, the output is either copied
// from `original` on byte for byte (`copied`), or one character of a normalised segment aligned with the
// input character at `original` the way `tokenizers` aligns them (see normalize_into).
struct OffsetAnchor {
  uint32_t normalized = 0;
  uint32_t original = 0;
  bool copied = false;
};
// As above; when the text changes, `anchors` receives the pieces in order (the first at 0/0).
bool nfc_if_changed(std::string_view text, std::string& out, std::vector<OffsetAnchor>& anchors);
// The input offset of normalised offset `offset` (exact in copied pieces; inside a normalised character,
// the input character it is aligned with).
uint32_t original_offset(const std::vector<OffsetAnchor>& anchors, uint32_t offset);

std::string nfc(std::string_view text);

uint8_t canonical_combining_class(uint32_t code_point);

// Unicode version of the generated tables.
const char* table_unicode_version();

}  // namespace qft::text::unicode
