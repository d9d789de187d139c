// Unicode Normalization Form C (UAX #15) without ICU: canonical decomposition, canonical ordering
// and canonical composition driven by tables generated from Python's unicodedata
// (gen_unicode_tables.py -> unicode_tables.inc). The tables emulate Unicode 9.0, the version
// Hugging Face `tokenizers` normalises with: characters assigned later are left as they are.
// All functions expect valid UTF-8.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace qft::text::unicode {

enum class QuickCheck { yes, maybe, no };

// The NFC_Quick_Check algorithm of UAX #15 over a whole string: `yes` proves the text is NFC.
QuickCheck nfc_quick_check(std::string_view text);

// When `text` is already NFC, returns false and leaves `out` alone (no copy: the hot path for
// ASCII and for pre-normalised text). Otherwise writes the NFC form to `out` and returns true.
bool nfc_if_changed(std::string_view text, std::string& out);

std::string nfc(std::string_view text);

uint8_t canonical_combining_class(uint32_t code_point);

// Unicode version of the generated tables.
const char* table_unicode_version();

}  // namespace qft::text::unicode
