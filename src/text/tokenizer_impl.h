// The state behind qft::text::Tokenizer (tokenizer.h), shared by the loader (tokenizer_load.cpp)
// and the encoder/decoder (tokenizer.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "text/added_tokens.h"
#include "text/byte_pair_merger.h"
#include "text/piece_cache.h"
#include "text/split_regex.h"
#include "text/tokenizer.h"

namespace qft::text {

// Everything the tokenizer knows, in one plain struct (free functions in the loader can fill it;
// Tokenizer::Impl itself is private to Tokenizer).
struct TokenizerModel {
  std::string source_path;  // for error messages
  uint64_t instance_id = 0;  // distinguishes tokenizers in the per-thread piece caches

  // Vocabulary: token string (byte-level form) -> id, and per id the token string and the raw
  // bytes it stands for. Ids that neither the vocabulary nor an added token uses are holes.
  std::unordered_map<std::string, int32_t> token_to_id;
  std::vector<std::string> id_to_token;
  std::vector<std::string> id_to_bytes;
  std::vector<uint8_t> id_is_known;
  std::vector<uint8_t> id_is_special;

  std::vector<AddedToken> added_tokens;
  AddedTokenMatcher raw_added_matcher;         // normalized == false: matched in the raw text
  AddedTokenMatcher normalized_added_matcher;  // normalized == true: matched after NFC

  bool normalize_nfc = false;
  std::optional<SplitRegex> split_regex;  // absent: the whole segment is one piece
  BytePairMerger merger;
  bool ignore_merges = false;  // when set, a piece that is a whole vocabulary entry is not merged
  std::unordered_map<std::string, int32_t> bytes_to_id;  // only filled when ignore_merges

  // Caches kept for encode_batch workers between calls.
  mutable std::mutex cache_pool_mutex;
  mutable std::vector<std::unique_ptr<PieceCache>> cache_pool;
  std::unique_ptr<PieceCache> borrow_cache() const;
  void return_cache(std::unique_ptr<PieceCache> cache) const;

  // Appends the ids (and, when `offsets` is set, the offsets) of `text`.
  void encode_into(std::string_view text, std::vector<int32_t>& ids, std::vector<uint32_t>* offsets,
                   PieceCache& cache) const;
  void encode_normalized(std::string_view text, uint32_t base_offset, std::vector<int32_t>& ids,
                         std::vector<uint32_t>* offsets, PieceCache& cache) const;
  void encode_pieces(std::string_view text, uint32_t base_offset, std::vector<int32_t>& ids,
                     std::vector<uint32_t>* offsets, PieceCache& cache) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>& ids, PieceCache& cache) const;
};

struct Tokenizer::Impl : TokenizerModel {};

}  // namespace qft::text
