// Tokenizer tests. Expected ids were produced by Hugging Face `tokenizers` 0.23 on the same
// tokenizer.json and checked by hand against the token strings in the comments (the full corpus
// comparison is tests/reference/test_tokenizer_reference.py).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "text/byte_level_alphabet.h"
#include "text/split_regex.h"
#include "text/tokenize_command.h"
#include "text/tokenizer.h"
#include "text/unicode_nfc.h"
#include "text/utf8.h"
#include "test_support.h"

namespace {

using qft::text::Tokenizer;
using Ids = std::vector<int32_t>;
namespace fs = std::filesystem;

using qft::test::error_of;

const Tokenizer& qwen3() { return qft::test::qwen3_tokenizer(); }

fs::path temp_dir() {
  const fs::path dir = fs::temp_directory_path() / ("qft_test_tokenizer_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir;
}

std::string write_file(const std::string& name, const std::string& content) {
  const fs::path path = temp_dir() / name;
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

// The bytes a token stands for (its string mapped back through the byte-level alphabet).
std::string raw_bytes_of(const Tokenizer& tokenizer, int32_t id) {
  const std::string token = tokenizer.id_to_token(id);
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    const int byte = qft::text::byte_of_code_point(qft::text::utf8::decode(token, pos));
    if (byte < 0) return token;  // a character outside the alphabet: the token is its own UTF-8
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

// ---- Qwen3 tokenizer: hand-checked cases ------------------------------------------------------

TEST(Qwen3Tokenizer, Vocabulary) {
  const Tokenizer& t = qwen3();
  EXPECT_EQ(t.vocab_size(), 151669);
  EXPECT_EQ(t.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(t.token_to_id("<think>"), 151667);
  EXPECT_EQ(t.token_to_id("Hello"), 9707);
  EXPECT_EQ(t.token_to_id("\xC4\xA0world"), 1879);  // "Ġworld"
  EXPECT_EQ(t.token_to_id("no-such-token-anywhere"), -1);
  EXPECT_EQ(t.id_to_token(151645), "<|im_end|>");
  EXPECT_EQ(t.id_to_token(1879), "\xC4\xA0world");
  EXPECT_NE(error_of([&] { t.id_to_token(151669); }).find("151669"), std::string::npos);
}

TEST(Qwen3Tokenizer, SpecialTokensInsideText) {
  // <|im_start|> user Ċ Hi <|im_end|> Ċ
  EXPECT_EQ(qwen3().encode("<|im_start|>user\nHi<|im_end|>\n"), (Ids{151644, 872, 198, 13048, 151645, 198}));
  // Non-special added tokens are matched too: a <think> b </think> c
  EXPECT_EQ(qwen3().encode("a<think>b</think>c"), (Ids{64, 151667, 65, 151668, 66}));
  // A broken special token is plain text: < | im _start |
  EXPECT_EQ(qwen3().encode("<|im_start|"), (Ids{27, 91, 318, 4906, 91}));
}

TEST(Qwen3Tokenizer, EmojiChineseDigits) {
  // ðŁĳ¨ âĢ į ðŁĳ© âĢ į ðŁĳ§: the ZWJ (E2 80 8D) is split into two byte-level tokens
  EXPECT_EQ(qwen3().encode("\U0001F468\u200D\U0001F469\u200D\U0001F467"),
            (Ids{145367, 378, 235, 145233, 378, 235, 145665}));
  // 你好 ， 世界 ！
  EXPECT_EQ(qwen3().encode("你好，世界！"), (Ids{108386, 3837, 99489, 6313}));
  // Digits are split one by one: 1 2 3 4 5 Ġ 3 . 1 4
  EXPECT_EQ(qwen3().encode("12345 3.14"), (Ids{16, 17, 18, 19, 20, 220, 18, 13, 16, 19}));
  EXPECT_EQ(qwen3().encode("Привет мир"), (Ids{53645, 26991, 8178, 137144}));
  EXPECT_EQ(qwen3().encode("नमस्ते"), (Ids{60096, 87244, 78368, 30484, 97, 34370}));
  EXPECT_EQ(qwen3().encode("こんにちは"), (Ids{89015}));
}

TEST(Qwen3Tokenizer, WhitespaceRunsAndNewlines) {
  // ĠĠčĊ ĉĉ Ġx: "\s*[\r\n]+" takes the spaces with the CRLF
  EXPECT_EQ(qwen3().encode("  \r\n\t\t x"), (Ids{10419, 298, 856}));
  // hello ĠĠĠĊ Ġ Ġworld ĠĠ: "\s+(?!\S)" leaves the last space for the word
  EXPECT_EQ(qwen3().encode("hello   \n  world  "), (Ids{14990, 5872, 220, 1879, 256}));
  // 1000 spaces then x: seven 128-space tokens, 64, 39 and Ġx
  Ids expected(7, 56940);
  expected.insert(expected.end(), {5238, 2559, 856});
  EXPECT_EQ(qwen3().encode(std::string(1000, ' ') + "x"), expected);
  // U+0085 (NEL) is whitespace for the Oniguruma regex of `tokenizers`: Âħ then !
  EXPECT_EQ(qwen3().encode("\xC2\x85!"), (Ids{126, 227, 0}));
  // ... and a whitespace run: a | Âħ Ġ Âħ (one piece), a | Ġ Âħ Ċ (one piece)
  EXPECT_EQ(qwen3().encode("a\xC2\x85 \xC2\x85"), (Ids{64, 126, 227, 2139, 227}));
  EXPECT_EQ(qwen3().encode("a \xC2\x85\n"), (Ids{64, 2139, 227, 198}));
}

TEST(Qwen3Tokenizer, ContractionsAreCaseInsensitive) {
  // it 's ĠI 'M Ġthey 'RE Ġwe ' Ve: "'Ve" is one piece (?i:'ve) but has no merge, so BPE gives ' Ve
  EXPECT_EQ(qwen3().encode("it's I'M they'RE we'Ve"), (Ids{275, 594, 358, 27603, 807, 94153, 582, 6, 42612}));
  // x ' Å¿ t Ġx 'S t: U+017F (long s) case-folds to s, so "'ſ" is a contraction piece and t is
  // left alone, exactly like "'S" followed by t.
  EXPECT_EQ(qwen3().encode("x'\u017Ft x'St"), (Ids{87, 6, 144815, 83, 856, 13272, 83}));
}

TEST(Qwen3Tokenizer, NormalisesToNfcBeforeSplitting) {
  EXPECT_EQ(qwen3().encode("e\u0301"), (Ids{963}));  // Ã© = é
  EXPECT_EQ(qwen3().encode("\u00E9"), (Ids{963}));
  EXPECT_EQ(qwen3().encode("\u1100\u1161\u11A8"), (Ids{126317}));  // conjoining jamo -> 각
}

TEST(Qwen3Tokenizer, FollowsTheUnicodeVersionsOfTokenizers) {
  // The regex (Oniguruma, Unicode 16): U+141C8 (Egyptian hieroglyph, 16.0) is a letter, so "a𔇈b"
  // is one piece; U+1E5F1 (Ol Onal digit, 16.0) is a number, split from "1".
  EXPECT_EQ(qwen3().encode("a\U000141C8b 1\U0001E5F1"), (Ids{64, 172, 242, 229, 230, 65, 220, 16, 172, 252, 245, 109}));
  // NFC (Unicode 9.0 tables): U+1ACE (14.0) is unassigned there and keeps its place before U+0334;
  // U+08D4 (9.0, class 230) is reordered after U+0334 (class 1).
  EXPECT_EQ(qwen3().encode("x\u1ACE\u0334 x\u08D4\u0334"), (Ids{87, 157, 104, 236, 136, 112, 856, 136, 112, 156, 96, 242}));
  EXPECT_EQ(Tokenizer::nfc("x\u1ACE\u0334 x\u08D4\u0334"), "x\u1ACE\u0334 x\u0334\u08D4");
  EXPECT_STREQ(qft::text::unicode::table_unicode_version(), "9.0.0");
}

TEST(Qwen3Tokenizer, LongPiecesUseTheHeapMerger) {
  // 1000 letters are one regex piece, far above the short-piece limit: 125 tokens of 8 'a's.
  EXPECT_EQ(qwen3().encode(std::string(1000, 'a')), Ids(125, 69440));
  // The same piece through the short merger (<= 64 bytes) agrees: 64 'a's are 8 tokens.
  EXPECT_EQ(qwen3().encode(std::string(64, 'a')), Ids(8, 69440));
  const std::string long_chinese = [] {
    std::string s;
    for (int i = 0; i < 300; ++i) s += "你好世界";
    return s;
  }();
  EXPECT_EQ(qwen3().decode(qwen3().encode(long_chinese)), long_chinese);
}

TEST(Qwen3Tokenizer, DecodeRoundTripAndSkipSpecial) {
  const std::string text =
      "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nçafé 👍🏽 "
      "你好 مرحبا  \t\r\n<think>x</think> it's 123<|im_end|>";
  EXPECT_EQ(qwen3().decode(qwen3().encode(text)), text);
  EXPECT_EQ(qwen3().decode(Ids{151644, 872, 151667, 87, 151668, 151645}, true), "user<think>x</think>");
  EXPECT_EQ(qwen3().decode(Ids{151644, 872, 151667, 87, 151668, 151645}, false),
            "<|im_start|>user<think>x</think><|im_end|>");
  // Decoding NFD input gives the NFC text back.
  EXPECT_EQ(qwen3().decode(qwen3().encode("cafe\u0301")), "caf\u00E9");
}

TEST(Qwen3Tokenizer, DecodeReplacesBrokenUtf8LikeRust) {
  // Tokens 126 (Â = byte C2) and 127 (Ã = byte C3) are lone lead bytes: one U+FFFD each.
  EXPECT_EQ(qwen3().decode(Ids{126, 127, 9707}), "\xEF\xBF\xBD\xEF\xBF\xBDHello");
  EXPECT_NE(error_of([] { qwen3().decode(Ids{9707, 200000}); }).find("id 200000 at position 1"), std::string::npos);
  EXPECT_NE(error_of([] { qwen3().decode(Ids{-1}); }).find("id -1"), std::string::npos);
}

TEST(Qwen3Tokenizer, OffsetsPointIntoTheInputEvenWhereNfcChangesIt) {
  const auto simple = qwen3().encode_with_offsets("Hello world");
  EXPECT_EQ(simple.ids, (Ids{9707, 1879}));
  EXPECT_EQ(simple.offsets, (std::vector<uint32_t>{0, 5}));

  // "cafe\u0301" becomes "café" (one byte shorter) for tokenizing, but offsets stay in the input.
  const std::string input = "cafe\u0301 <think>\U0001F468\u200D\U0001F469 ok<think>\u0301x";
  const auto encoding = qwen3().encode_with_offsets(input);
  ASSERT_EQ(encoding.ids.size(), encoding.offsets.size());
  EXPECT_EQ(encoding.ids, qwen3().encode(input));
  const std::string normalized = Tokenizer::nfc(input);
  ASSERT_EQ(normalized.size() + 1, input.size());
  // Tokens outside the changed segment ("e\u0301", bytes 3..6) carry their own bytes at their offset.
  for (size_t i = 0; i < encoding.ids.size(); ++i) {
    ASSERT_TRUE(i == 0 || encoding.offsets[i] >= encoding.offsets[i - 1]) << "token " << i;
    const std::string bytes = raw_bytes_of(qwen3(), encoding.ids[i]);
    if (encoding.offsets[i] >= 7) EXPECT_EQ(input.substr(encoding.offsets[i], bytes.size()), bytes) << "token " << i;
  }
  // <think> starts after "cafe\u0301 " (7 bytes of input).
  const auto think = std::find(encoding.ids.begin(), encoding.ids.end(), 151667) - encoding.ids.begin();
  EXPECT_EQ(encoding.offsets[think], 7u);
  // " ok" starts after <think> (7), emoji (4), ZWJ (3), emoji (4); the second <think> after " ok".
  const size_t ok_at = 7u + 7u + 4u + 3u + 4u;
  const auto second_think = std::find(encoding.ids.begin() + think + 1, encoding.ids.end(), 151667) - encoding.ids.begin();
  EXPECT_EQ(encoding.offsets[second_think - 1], ok_at);
  EXPECT_EQ(encoding.offsets[second_think], ok_at + 3);
  // A combining mark right after a special token stays a mark of its own (as in `tokenizers`, which
  // splits added tokens off before normalising), at its input offset.
  EXPECT_EQ(encoding.offsets[second_think + 1], ok_at + 3 + 7);
}

TEST(Qwen3Tokenizer, InvalidUtf8IsAnErrorWithTheOffset) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string("ab\xFF" "cd"), "byte offset 2 (byte 0xFF)"},
      {std::string("\xC0\xAF"), "byte offset 0 (byte 0xC0)"},        // overlong '/'
      {std::string("ok \xED\xA0\x80"), "byte offset 3 (byte 0xED)"},  // surrogate U+D800
      {std::string("\xE4\xBD\xA0\xE4\xBD"), "byte offset 3 (byte 0xE4)"},  // truncated at the end
      {std::string("\xF4\x90\x80\x80"), "byte offset 0 (byte 0xF4)"},  // above U+10FFFF
      {std::string("<|im_start|>\x80"), "byte offset 12 (byte 0x80)"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string message = error_of([&] { qwen3().encode(text); });
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_NE(message.find("invalid UTF-8"), std::string::npos) << message;
  }
  EXPECT_NE(error_of([] { Tokenizer::nfc("\xFE"); }).find("byte offset 0"), std::string::npos);
}

TEST(Qwen3Tokenizer, BatchEqualsSingleEncodes) {
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back("doc " + std::to_string(i) + ": <|im_start|>héllo wörld 你好 " + std::string(i % 17, ' ') +
                    std::string(i % 90, 'z') + "\n");
  }
  for (int threads : {1, 2, 4}) {
    const auto batch = qwen3().encode_batch(texts, threads);
    ASSERT_EQ(batch.size(), texts.size());
    for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(batch[i], qwen3().encode(texts[i])) << i;
  }
  texts[150] = "bad \xC3";
  const std::string message = error_of([&] { qwen3().encode_batch(texts, 3); });
  EXPECT_NE(message.find("text 150"), std::string::npos) << message;
  EXPECT_TRUE(qwen3().encode_batch({}, 4).empty());
}

TEST(SplitRegex, TranslatesOnigurumaClasses) {
  const std::string letters = qft::text::translate_oniguruma_pattern("\\p{L}+");
  EXPECT_EQ(letters.rfind("[\\p{L}", 0), 0u) << letters;
  EXPECT_NE(letters.find("\\x{31350}-\\x{323AF}"), std::string::npos) << letters;  // CJK Extension H (15.0)
  const std::string in_class = qft::text::translate_oniguruma_pattern("[^\\s\\p{N}]");
  EXPECT_EQ(in_class.rfind("[^\\s\\p{N}\\x{10D40}", 0), 0u) << in_class;
  EXPECT_EQ(qft::text::translate_oniguruma_pattern("'s|\\s+(?!\\S)|[\\r\\n]"), "'s|\\s+(?!\\S)|[\\r\\n]");
  EXPECT_NE(error_of([] { qft::text::translate_oniguruma_pattern("\\P{L}"); }).find("not supported"), std::string::npos);
}

// ---- NFC -----------------------------------------------------------------------------------------

TEST(UnicodeNfc, ComposesReordersAndExcludes) {
  EXPECT_EQ(Tokenizer::nfc("e\u0301"), "\u00E9");
  EXPECT_EQ(Tokenizer::nfc("\u212B"), "\u00C5");                  // Angstrom sign: singleton
  EXPECT_EQ(Tokenizer::nfc("\u2126"), "\u03A9");                  // Ohm sign
  EXPECT_EQ(Tokenizer::nfc("o\u0323\u0302"), "\u1ED9");           // ộ
  EXPECT_EQ(Tokenizer::nfc("o\u0302\u0323"), "\u1ED9");           // marks reordered first
  EXPECT_EQ(Tokenizer::nfc("\u0958"), "\u0915\u093C");            // composition exclusion
  EXPECT_EQ(Tokenizer::nfc("\u1100\u1161\u11A8"), "\uAC01");      // conjoining jamo
  EXPECT_EQ(Tokenizer::nfc("\uAC00\u11A8"), "\uAC01");            // LV + T
  EXPECT_EQ(Tokenizer::nfc("\u0301abc"), "\u0301abc");            // leading mark stays
  EXPECT_EQ(Tokenizer::nfc("a\u0308\u0308"), "\u00E4\u0308");     // second mark is blocked
  EXPECT_EQ(Tokenizer::nfc("\uFB01 \u00BD"), "\uFB01 \u00BD");    // compatibility chars untouched
  EXPECT_EQ(Tokenizer::nfc("\u0344"), "\u0308\u0301");            // non-starter decomposition
  EXPECT_EQ(Tokenizer::nfc("\u304B\u3099"), "\u304C");            // か + voiced mark = が
  EXPECT_EQ(Tokenizer::nfc("plain ASCII stays"), "plain ASCII stays");
  EXPECT_EQ(Tokenizer::nfc(""), "");
}

TEST(UnicodeNfc, QuickCheck) {
  EXPECT_TRUE(Tokenizer::is_nfc_quick("hello world"));
  EXPECT_TRUE(Tokenizer::is_nfc_quick("caf\u00E9 你好 \U0001F44D"));
  EXPECT_FALSE(Tokenizer::is_nfc_quick("cafe\u0301"));  // U+0301 is Maybe
  EXPECT_FALSE(Tokenizer::is_nfc_quick("\u212B"));      // No
  EXPECT_FALSE(Tokenizer::is_nfc_quick("\u1EA1\u0301"));  // U+0301 after a starter: Maybe
  EXPECT_FALSE(Tokenizer::is_nfc_quick("a\u0301\u0323"));  // out of canonical order
  EXPECT_EQ(qft::text::unicode::canonical_combining_class(0x0301), 230);
  EXPECT_EQ(qft::text::unicode::canonical_combining_class(0x0323), 220);
  EXPECT_EQ(qft::text::unicode::canonical_combining_class('a'), 0);
  std::string out = "untouched";
  EXPECT_FALSE(qft::text::unicode::nfc_if_changed("already NFC \u00E9", out));
  EXPECT_EQ(out, "untouched");
}

// ---- A tiny synthetic tokenizer: merge order and added-token flags -------------------------------

nlohmann::json tiny_tokenizer_json(bool merges_as_pairs) {
  nlohmann::json vocab = nlohmann::json::object();
  const auto& alphabet = qft::text::byte_to_code_point();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    qft::text::utf8::append(symbol, alphabet[b]);
    vocab[symbol] = b;
  }
  vocab["bc"] = 256;
  vocab["ab"] = 257;
  vocab["abc"] = 258;
  vocab["aa"] = 259;
  vocab["\xC4\xA0" "c"] = 260;   // Ġc
  vocab["\xC4\xA0" "ca"] = 261;  // Ġca
  const std::vector<std::pair<std::string, std::string>> merge_list = {
      {"b", "c"}, {"a", "b"}, {"ab", "c"}, {"a", "a"}, {"\xC4\xA0", "c"}, {"\xC4\xA0" "c", "a"}};
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [left, right] : merge_list) {
    if (merges_as_pairs) {
      merges.push_back({left, right});
    } else {
      merges.push_back(left + " " + right);
    }
  }
  auto added = [](int id, const std::string& content, bool special, bool normalized, bool lstrip, bool rstrip,
                  bool single_word) {
    return nlohmann::json{{"id", id},         {"content", content}, {"special", special},
                          {"normalized", normalized}, {"lstrip", lstrip},   {"rstrip", rstrip},
                          {"single_word", single_word}};
  };
  const std::string pattern =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
      "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return nlohmann::json{
      {"version", "1.0"},
      {"added_tokens",
       {added(262, "<s>", true, false, false, false, false), added(263, "[L]", false, false, true, false, false),
        added(264, "[R]", false, false, false, true, false), added(265, "cat", false, false, false, false, true),
        added(266, "e\u0301!", false, true, false, false, false)}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}}},
      {"post_processor", nullptr},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer tiny_tokenizer(bool merges_as_pairs) {
  return Tokenizer::from_file(
      write_file(merges_as_pairs ? "tiny_pairs.json" : "tiny_strings.json", tiny_tokenizer_json(merges_as_pairs).dump()));
}

TEST(TinyTokenizer, MergesFollowRankThenLeftmost) {
  for (bool pairs : {false, true}) {
    const Tokenizer t = tiny_tokenizer(pairs);
    // (b,c) has rank 0 < (a,b) rank 1, and (a,bc) is no merge: a bc
    EXPECT_EQ(t.encode("abc"), (Ids{97, 256})) << pairs;
    EXPECT_EQ(t.encode("ab"), (Ids{257}));
    // Equal ranks: the leftmost pair merges first: aa a, aa aa a
    EXPECT_EQ(t.encode("aaa"), (Ids{259, 97}));
    EXPECT_EQ(t.encode("aaaaa"), (Ids{259, 259, 97}));
    EXPECT_EQ(t.encode(" ca cab"), (Ids{261, 260, 257}));  // Ġca Ġc ab
    EXPECT_EQ(t.vocab_size(), 267);
  }
}

TEST(TinyTokenizer, AddedTokenFlags) {
  const Tokenizer t = tiny_tokenizer(false);
  EXPECT_EQ(t.encode("<s>abc<s>"), (Ids{262, 97, 256, 262}));
  // lstrip: the token swallows the spaces before it ("  [L]")
  EXPECT_EQ(t.encode("x  [L]y"), (Ids{120, 263, 121}));
  // rstrip: the token swallows the spaces after it ("[R]   ")
  EXPECT_EQ(t.encode("a [R]   z"), (Ids{97, 32, 264, 122}));
  // single_word: "cat" only where no word character touches it
  EXPECT_EQ(t.encode("cat concat cat_ cat. xcat (cat)"),
            (Ids{265, 260, 111, 110, 99, 97, 116, 261, 116, 95, 32, 265, 46, 32, 120, 99, 97, 116, 32, 40, 265, 41}));
  // normalized: matched after NFC, whichever form the input uses
  EXPECT_EQ(t.encode("e\u0301!"), (Ids{266}));
  EXPECT_EQ(t.encode("\u00E9!"), (Ids{266}));
  // Decoding an added token maps its characters through the byte alphabet (é is byte E9).
  EXPECT_EQ(t.decode(Ids{262, 97, 263, 264, 265, 266}), "<s>a[L][R]cat\xEF\xBF\xBD!");
  EXPECT_EQ(t.decode(Ids{262, 97, 263}, true), "a[L]");
}

// ---- Errors in tokenizer.json ---------------------------------------------------------------------

TEST(TokenizerJson, ErrorsNameTheFileAndKey) {
  const std::string missing = (temp_dir() / "does-not-exist.json").string();
  std::string message = error_of([&] { Tokenizer::from_file(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("cannot open"), std::string::npos) << message;

  const std::string garbled = write_file("garbled.json", "{\"model\": {\"vocab\": {\"a\": 1,");
  message = error_of([&] { Tokenizer::from_file(garbled); });
  EXPECT_NE(message.find(garbled), std::string::npos) << message;
  EXPECT_NE(message.find("line 1 column 29: malformed JSON: unexpected end of text, expected a key"), std::string::npos) << message;
  // Nested 100k deep: an error, not a stack overflow.
  const std::string deep = write_file("deep.json", std::string(100000, '[') + std::string(100000, ']'));
  message = error_of([&] { Tokenizer::from_file(deep); });
  EXPECT_NE(message.find("nested deeper than 512 levels"), std::string::npos) << message;

  auto with = [](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = tiny_tokenizer_json(false);
    edit(j);
    return write_file("edited.json", j.dump());
  };
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](nlohmann::json& j) { j["model"].erase("vocab"); }, "missing key 'model.vocab'"},
      {[](nlohmann::json& j) { j.erase("model"); }, "missing key 'model'"},
      {[](nlohmann::json& j) { j["model"]["merges"][2] = "ab zz"; }, "'model.merges[2]': right token 'zz'"},
      {[](nlohmann::json& j) { j["model"]["merges"][0] = "abc"; }, "'model.merges[0]'"},
      {[](nlohmann::json& j) { j["model"]["vocab"]["ab"] = "x"; }, "model.vocab[\"ab\"]"},
      {[](nlohmann::json& j) { j["model"]["vocab"]["ab"] = 2000000000; }, "model.vocab[\"ab\"]"},
      {[](nlohmann::json& j) { j["model"]["vocab"].erase("a"); }, "byte 0x61"},
      {[](nlohmann::json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, "unsupported 'normalizer'"},
      {[](nlohmann::json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       "pre_tokenizer.pretokenizers[0].behavior"},
      {[](nlohmann::json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
       "cannot compile the pre-tokenizer regex"},
      {[](nlohmann::json& j) { j["added_tokens"][1].erase("content"); }, "missing key 'added_tokens[1].content'"},
      {[](nlohmann::json& j) { j["model"]["type"] = "WordPiece"; }, "model.type"},
      {[](nlohmann::json& j) { j["decoder"] = nullptr; }, "'decoder'"},
  };
  for (const auto& [edit, expected] : cases) {
    const std::string path = with(edit);
    message = error_of([&] { Tokenizer::from_file(path); });
    EXPECT_NE(message.find(expected), std::string::npos) << "expected '" << expected << "' in: " << message;
    EXPECT_NE(message.find(path), std::string::npos) << message;
  }
}

// ---- The tokenize command -------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(TokenizeCommand, EncodesAndDecodesJsonl) {
  const std::string input = write_file("in.jsonl", "{\"text\": \"Hello world\"}\n{\"text\": \"<think>\\u00e9\"}\n");
  const std::string ids = (temp_dir() / "ids.jsonl").string();
  const std::string decoded = (temp_dir() / "decoded.jsonl").string();
  ASSERT_EQ(qft::text::run_tokenize_command({"--tokenizer", QFT_TOKENIZER_DIR, "--input", input, "--output", ids,
                                             "--threads", "2"}),
            0);
  EXPECT_EQ(read_file(ids), "[9707,1879]\n[151667,963]\n");
  ASSERT_EQ(qft::text::run_tokenize_command(
                {"--tokenizer", std::string(QFT_TOKENIZER_DIR) + "/tokenizer.json", "--input", ids, "--output", decoded,
                 "--decode"}),
            0);
  EXPECT_EQ(read_file(decoded), "{\"text\":\"Hello world\"}\n{\"text\":\"<think>\u00e9\"}\n");
}

TEST(TokenizeCommand, BadInputNamesFileAndLine) {
  const std::string out = (temp_dir() / "out.jsonl").string();
  auto run = [&](const std::string& content, const std::vector<std::string>& extra = {}) {
    const std::string input = write_file("bad.jsonl", content);
    std::vector<std::string> args = {"--tokenizer", QFT_TOKENIZER_DIR, "--input", input, "--output", out};
    args.insert(args.end(), extra.begin(), extra.end());
    return error_of([&] { qft::text::run_tokenize_command(args); });
  };
  EXPECT_NE(run("{\"text\": \"ok\"}\n{\"text\": \n").find("bad.jsonl:2: not valid JSON"), std::string::npos);
  EXPECT_NE(run("{\"text\": \"ok\"}\n\n{\"text\": \"ok\"}\n").find("bad.jsonl:2: empty line"), std::string::npos);
  EXPECT_NE(run("{\"txt\": \"ok\"}\n").find("bad.jsonl:1: missing key \"text\""), std::string::npos);
  EXPECT_NE(run("{\"text\": 5}\n").find("bad.jsonl:1: \"text\" is a JSON number"), std::string::npos);
  EXPECT_NE(run("[1, 2]\n[3, \"x\"]\n", {"--decode"}).find("bad.jsonl:2: element 1"), std::string::npos);
  EXPECT_NE(run("[1, 999999]\n", {"--decode"}).find("bad.jsonl:1:"), std::string::npos);
  EXPECT_NE(run("{\"text\": \"ok\"}\n", {"--threads", "zero"}).find("--threads"), std::string::npos);
  EXPECT_NE(run("{\"text\": \"ok\"}\n", {"--frobnicate"}).find("unknown argument '--frobnicate'"), std::string::npos);
}

}  // namespace
