#!/usr/bin/env python3
"""Generates the Unicode tables of the tokenizer (both files are committed):

  src/text/unicode_tables.inc       the data NFC normalisation needs (UAX #15), see below;
  src/text/split_regex_classes.inc  letters and numbers that the pre-tokenizer regex must add to
                                    PCRE2's \\p{L} and \\p{N}, see ONIGURUMA_EXTRA_LETTERS.

Run:  python3 src/text/gen_unicode_tables.py src/text
      python3 src/text/gen_unicode_tables.py --probe-oniguruma   (re-derives the extra classes)

The data comes from Python's `unicodedata` module (Python 3.11: Unicode 14.0.0), but the tables
emulate Unicode 9.0.0, because that is what Hugging Face `tokenizers` normalises with (its Rust
crate unicode-normalization-alignments carries Unicode 9.0 tables; probed with tokenizers 0.23:
marks from 9.0 such as U+08D4 and U+1E944 are reordered, marks from 10.0 on such as U+1DF6, U+1ACE
and U+08CF are not). Characters assigned after 9.0 are therefore treated as unassigned here: class
0, no decomposition, no composition. Canonical data of characters assigned by 9.0 never changes
(Unicode stability policy), so the only difference is the list below, taken from DerivedAge
(Perl's unicore/To/Age.pl, Unicode 14.0): every character newer than 9.0 that has a combining
class, a canonical decomposition or a non-NFC form in Unicode 14.0.

Emitted (all sorted, looked up by the C++ code in unicode_nfc.cpp):
  * kPropertyStage1/kPropertyStage2: a two-stage table code point -> (canonical combining class |
    NFC_Quick_Check << 8) for code points below kPropertyTableLimit (everything above has class 0
    and quick check Yes; the script asserts that).
  * kDecompositions + kDecompositionPool: full (recursively applied) canonical decompositions.
    Hangul syllables are left out: they decompose algorithmically.
  * kCompositions: primary composites, (first, second) -> composite, i.e. the canonical pairs that
    NFC recomposes (composition exclusions and singletons are not in it). Hangul is algorithmic.
"""
import sys
import unicodedata

# Code points assigned after Unicode 9.0 that carry normalisation data in Unicode 14.0 (see above).
ASSIGNED_AFTER_9_0_WITH_NORMALIZATION_DATA = [
    (0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C), (0xD3B, 0xD3C),
    (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA), (0xA82C, 0xA82C),
    (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50), (0x10F82, 0x10F85), (0x11070, 0x11070),
    (0x1133B, 0x1133B), (0x1145E, 0x1145E), (0x11839, 0x1183A), (0x11938, 0x11938), (0x1193D, 0x1193E),
    (0x11943, 0x11943), (0x119E0, 0x119E0), (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99),
    (0x11D42, 0x11D42), (0x11D44, 0x11D45), (0x11D97, 0x11D97), (0x16FF0, 0x16FF1), (0x1E130, 0x1E136),
    (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF),
]
SOURCE_UNICODE_VERSION = "14.0.0"  # the list above is complete for this unicodedata version only
EMULATED_UNICODE_VERSION = "9.0.0"
NEWER_THAN_EMULATED = {cp for lo, hi in ASSIGNED_AFTER_9_0_WITH_NORMALIZATION_DATA for cp in range(lo, hi + 1)}

# `tokenizers` runs the split regex with Oniguruma, whose Unicode (16.0 in tokenizers 0.23) is newer
# than PCRE2 10.42's (14.0): letters and numbers assigned in 15.0-16.0 are \p{L}/\p{N} there and
# unassigned here. These ranges are added to \p{L} and \p{N} when the pattern is translated for PCRE2.
# Derived with --probe-oniguruma, which classifies every code point with the tokenizers Split
# pre-tokenizer and compares with unicodedata 14.0 (no code point differs the other way).
ONIGURUMA_EXTRA_LETTERS = [
    (0x1C89, 0x1C8A), (0xA7CB, 0xA7CD), (0xA7DA, 0xA7DC), (0x105C0, 0x105F3), (0x10D4A, 0x10D65),
    (0x10D6F, 0x10D85), (0x10EC2, 0x10EC4), (0x1123F, 0x11240), (0x11380, 0x11389), (0x1138B, 0x1138B),
    (0x1138E, 0x1138E), (0x11390, 0x113B5), (0x113B7, 0x113B7), (0x113D1, 0x113D1), (0x113D3, 0x113D3),
    (0x11BC0, 0x11BE0), (0x11F02, 0x11F02), (0x11F04, 0x11F10), (0x11F12, 0x11F33), (0x1342F, 0x1342F),
    (0x13441, 0x13446), (0x13460, 0x143FA), (0x16100, 0x1611D), (0x16D40, 0x16D6C), (0x18CFF, 0x18CFF),
    (0x1B132, 0x1B132), (0x1B155, 0x1B155), (0x1DF25, 0x1DF2A), (0x1E030, 0x1E06D), (0x1E4D0, 0x1E4EB),
    (0x1E5D0, 0x1E5ED), (0x1E5F0, 0x1E5F0), (0x2B739, 0x2B739), (0x2EBF0, 0x2EE5D), (0x31350, 0x323AF),
]
ONIGURUMA_EXTRA_NUMBERS = [
    (0x10D40, 0x10D49), (0x116D0, 0x116E3), (0x11BF0, 0x11BF9), (0x11F50, 0x11F59), (0x16130, 0x16139),
    (0x16D70, 0x16D79), (0x1CCF0, 0x1CCF9), (0x1D2C0, 0x1D2D3), (0x1E4F0, 0x1E4F9), (0x1E5F1, 0x1E5FA),
]

BLOCK = 128
LIMIT = 0x30000
QC_YES, QC_MAYBE, QC_NO = 0, 1, 2
HANGUL_S_BASE, HANGUL_S_COUNT = 0xAC00, 11172


def canonical_mapping(cp):
    """The one-level canonical decomposition of cp, or None (compatibility mappings start with '<')."""
    field = unicodedata.decomposition(chr(cp))
    if not field or field.startswith("<"):
        return None
    return [int(x, 16) for x in field.split()]


def full_decomposition(cp):
    mapping = canonical_mapping(cp)
    if mapping is None:
        return [cp]
    out = []
    for part in mapping:
        out.extend(full_decomposition(part))
    return out


def probe_oniguruma():
    """Prints the code points that tokenizers' regex classifies as letter/number unlike unicodedata."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+"), "isolated")
    found = {"L": [], "N": []}
    for cp in range(0x110000):
        ch = chr(cp)
        if 0xD800 <= cp <= 0xDFFF or ch.isspace() or cp == 0x85:
            continue
        # letter: "Xa" and "aX" are single pieces; number: both split; anything else: only "aX" splits.
        pieces = (len(split.pre_tokenize_str(ch + "a")), len(split.pre_tokenize_str("a" + ch)))
        kind = {(1, 1): "L", (2, 2): "N"}.get(pieces, "O")
        ours = {"L": "L", "N": "N"}.get(unicodedata.category(ch)[0], "O")
        if kind != ours:
            assert kind in found, f"U+{cp:04X}: tokenizers says {kind}, unicodedata says {ours}"
            found[kind].append(cp)
    for kind, cps in found.items():
        ranges = []
        for cp in cps:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        print(kind, ", ".join(f"(0x{lo:X}, 0x{hi:X})" for lo, hi in ranges))


def regex_ranges(ranges):
    return "".join(f"\\\\x{{{lo:X}}}" + (f"-\\\\x{{{hi:X}}}" if hi != lo else "") for lo, hi in ranges)


def write_split_regex_classes(path):
    with open(path, "w") as f:
        f.write("// Generated by src/text/gen_unicode_tables.py -- do not edit.\n")
        f.write("// Letters and numbers of Oniguruma's Unicode 16.0 that PCRE2 10.42 (Unicode 14.0) lacks.\n")
        f.write(f'constexpr const char* kExtraLetterRanges = "{regex_ranges(ONIGURUMA_EXTRA_LETTERS)}";\n')
        f.write(f'constexpr const char* kExtraNumberRanges = "{regex_ranges(ONIGURUMA_EXTRA_NUMBERS)}";\n')


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--probe-oniguruma":
        probe_oniguruma()
        return
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out_dir = sys.argv[1]
    write_split_regex_classes(f"{out_dir}/split_regex_classes.inc")
    with open(f"{out_dir}/unicode_tables.inc", "w") as f:
        f.write(nfc_tables())


def nfc_tables():
    if unicodedata.unidata_version != SOURCE_UNICODE_VERSION:
        sys.exit(f"unicodedata is Unicode {unicodedata.unidata_version}; this script's list of characters newer "
                 f"than {EMULATED_UNICODE_VERSION} was made for {SOURCE_UNICODE_VERSION}: extend it from DerivedAge "
                 "first (characters with a combining class, canonical decomposition or non-NFC form)")
    ccc = {}
    qc = {}
    decompositions = {}
    compositions = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or cp in NEWER_THAN_EMULATED:
            continue
        ch = chr(cp)
        klass = unicodedata.combining(ch)
        if klass:
            ccc[cp] = klass
        if HANGUL_S_BASE <= cp < HANGUL_S_BASE + HANGUL_S_COUNT:
            continue
        mapping = canonical_mapping(cp)
        if mapping is not None:
            decompositions[cp] = full_decomposition(cp)
            # A primary composite is a two-element canonical mapping that NFC puts back together.
            assert not NEWER_THAN_EMULATED.intersection(mapping), hex(cp)
            if len(mapping) == 2 and unicodedata.normalize("NFC", chr(mapping[0]) + chr(mapping[1])) == ch:
                compositions.append((mapping[0], mapping[1], cp))
        if unicodedata.normalize("NFC", ch) != ch:
            qc[cp] = QC_NO
    for first, second, _ in compositions:
        if qc.get(second) != QC_NO:
            qc[second] = QC_MAYBE
    # Hangul vowel and trailing jamo combine with a preceding syllable / leading jamo.
    for cp in list(range(0x1161, 0x1176)) + list(range(0x11A8, 0x11C3)):
        qc[cp] = QC_MAYBE

    for cp in list(ccc) + list(qc) + list(decompositions):
        assert cp < LIMIT, hex(cp)

    # Two-stage property table with shared identical blocks.
    blocks = []
    block_ids = {}
    stage1 = []
    for base in range(0, LIMIT, BLOCK):
        block = tuple(ccc.get(cp, 0) | (qc.get(cp, QC_YES) << 8) | ((cp in decompositions) << 10)
                      for cp in range(base, base + BLOCK))
        if block not in block_ids:
            block_ids[block] = len(blocks)
            blocks.append(block)
        stage1.append(block_ids[block])

    out = []
    w = out.append
    w("// Generated by src/text/gen_unicode_tables.py -- do not edit.\n")
    w(f"// Unicode {EMULATED_UNICODE_VERSION} normalisation data (as Hugging Face tokenizers uses), made from "
      f"Python {sys.version.split()[0]} unicodedata {unicodedata.unidata_version}.\n")
    w("// NOLINTBEGIN\n")
    w(f'constexpr const char* kUnicodeVersion = "{EMULATED_UNICODE_VERSION}";\n')
    w(f"constexpr uint32_t kPropertyBlockSize = {BLOCK};\n")
    w(f"constexpr uint32_t kPropertyTableLimit = 0x{LIMIT:X};\n")
    w(f"constexpr uint16_t kPropertyStage1[{len(stage1)}] = {{\n")
    for i in range(0, len(stage1), 32):
        w(",".join(str(x) for x in stage1[i:i + 32]) + ",\n")
    w("};\n")
    w(f"constexpr uint16_t kPropertyStage2[{len(blocks) * BLOCK}] = {{\n")
    for block in blocks:
        for i in range(0, BLOCK, 32):
            w(",".join(str(x) for x in block[i:i + 32]) + ",\n")
    w("};\n")

    pool = []
    w(f"constexpr DecompositionEntry kDecompositions[{len(decompositions)}] = {{\n")
    for cp in sorted(decompositions):
        seq = decompositions[cp]
        w(f"{{0x{cp:X},{len(pool)},{len(seq)}}},\n")
        pool.extend(seq)
    w("};\n")
    w(f"constexpr uint32_t kDecompositionPool[{len(pool)}] = {{\n")
    for i in range(0, len(pool), 16):
        w(",".join(f"0x{x:X}" for x in pool[i:i + 16]) + ",\n")
    w("};\n")
    compositions.sort()
    w(f"constexpr CompositionEntry kCompositions[{len(compositions)}] = {{\n")
    for first, second, composite in compositions:
        w(f"{{0x{first:X},0x{second:X},0x{composite:X}}},\n")
    w("};\n")
    w("// NOLINTEND\n")
    return "".join(out)


if __name__ == "__main__":
    main()
