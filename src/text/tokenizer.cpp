// Encoding and decoding (loading is in tokenizer_load.cpp). The order of steps is that of
// `tokenizers`: added tokens are cut out of the raw text, each remaining segment is NFC-normalised,
// split by the pre-tokenizer regex, and each piece is merged by byte-pair ranks.
#include "text/tokenizer.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "text/piece_cache.h"
#include "text/tokenizer_impl.h"
#include "text/unicode_nfc.h"
#include "text/utf8.h"

namespace qft::text {

std::unique_ptr<PieceCache> TokenizerModel::borrow_cache() const {
  {
    std::lock_guard<std::mutex> lock(cache_pool_mutex);
    if (!cache_pool.empty()) {
      std::unique_ptr<PieceCache> cache = std::move(cache_pool.back());
      cache_pool.pop_back();
      return cache;
    }
  }
  return std::make_unique<PieceCache>();
}

void TokenizerModel::return_cache(std::unique_ptr<PieceCache> cache) const {
  std::lock_guard<std::mutex> lock(cache_pool_mutex);
  cache_pool.push_back(std::move(cache));
}

void TokenizerModel::encode_piece(std::string_view piece, std::vector<int32_t>& ids, PieceCache& cache) const {
  if (piece.size() == 1) {
    ids.push_back(merger.byte_symbol(static_cast<unsigned char>(piece[0])));
    return;
  }
  if (ignore_merges) {
    auto it = bytes_to_id.find(std::string(piece));
    if (it != bytes_to_id.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  if (piece.size() > PieceCache::kMaxPieceBytes) {
    merger.merge(piece, ids);
    return;
  }
  const size_t hash = PieceCache::hash_of(piece);
  if (cache.lookup(piece, hash, ids)) return;
  const size_t first = ids.size();
  merger.merge(piece, ids);
  cache.store(piece, hash, ids.data() + first, ids.size() - first);
}

void TokenizerModel::encode_pieces(std::string_view text, uint32_t base_offset, std::vector<int32_t>& ids,
                                    std::vector<uint32_t>* offsets, PieceCache& cache) const {
  thread_local std::vector<ByteSpan> pieces;
  pieces.clear();
  if (split_regex) {
    split_regex->split(text, pieces);
  } else if (!text.empty()) {
    pieces.push_back({0, static_cast<uint32_t>(text.size())});
  }
  for (const ByteSpan& span : pieces) {
    const size_t first = ids.size();
    encode_piece(text.substr(span.begin, span.end - span.begin), ids, cache);
    if (!offsets) continue;
    // Byte-level tokens cover their bytes exactly, so offsets are running byte lengths.
    uint32_t offset = base_offset + span.begin;
    for (size_t i = first; i < ids.size(); ++i) {
      offsets->push_back(offset);
      offset += static_cast<uint32_t>(id_to_bytes[ids[i]].size());
    }
  }
}

void TokenizerModel::encode_normalized(std::string_view text, uint32_t base_offset, std::vector<int32_t>& ids,
                                        std::vector<uint32_t>* offsets, PieceCache& cache) const {
  if (normalized_added_matcher.empty()) {
    encode_pieces(text, base_offset, ids, offsets, cache);
    return;
  }
  std::vector<TextSegment> segments;
  normalized_added_matcher.split(text, 0, static_cast<uint32_t>(text.size()), segments);
  for (const TextSegment& segment : segments) {
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      if (offsets) offsets->push_back(base_offset + segment.begin);
    } else {
      encode_pieces(text.substr(segment.begin, segment.end - segment.begin), base_offset + segment.begin, ids,
                    offsets, cache);
    }
  }
}

void TokenizerModel::encode_into(std::string_view text, std::vector<int32_t>& ids, std::vector<uint32_t>* offsets,
                                 PieceCache& cache) const {
  QFT_CHECK(text.size() < UINT32_MAX / 2, "Tokenizer::encode: a single text of {} bytes is too long (limit 2 GiB)",
            text.size());
  utf8::check_valid(text, "Tokenizer::encode input");
  std::vector<TextSegment> segments;
  if (raw_added_matcher.empty()) {
    if (!text.empty()) segments.push_back({0, static_cast<uint32_t>(text.size()), -1});
  } else {
    raw_added_matcher.split(text, 0, static_cast<uint32_t>(text.size()), segments);
  }
  std::string normalized;
  std::vector<unicode::OffsetAnchor> anchors;
  for (const TextSegment& segment : segments) {
    const std::string_view piece = text.substr(segment.begin, segment.end - segment.begin);
    if (segment.token_id >= 0) {
      ids.push_back(segment.token_id);
      if (offsets) offsets->push_back(segment.begin);
    } else if (normalize_nfc && unicode::nfc_if_changed(piece, normalized, anchors)) {
      // Offsets are reported in the input: the tokens of the normalised text are mapped back.
      const size_t first = offsets ? offsets->size() : 0;
      encode_normalized(normalized, 0, ids, offsets, cache);
      if (offsets) {
        for (size_t i = first; i < offsets->size(); ++i)
          (*offsets)[i] = segment.begin + unicode::original_offset(anchors, (*offsets)[i]);
      }
    } else {
      encode_normalized(piece, segment.begin, ids, offsets, cache);
    }
  }
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  impl_->encode_into(text, ids, nullptr, PieceCache::for_thread(impl_->instance_id));
  return ids;
}

Encoding Tokenizer::encode_with_offsets(std::string_view text) const {
  Encoding encoding;
  impl_->encode_into(text, encoding.ids, &encoding.offsets, PieceCache::for_thread(impl_->instance_id));
  return encoding;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts, int threads) const {
  std::vector<std::vector<int32_t>> results(texts.size());
  size_t thread_count = threads > 0 ? static_cast<size_t>(threads) : std::thread::hardware_concurrency();
  thread_count = std::max<size_t>(1, std::min(thread_count, texts.size()));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto work = [&] {
    std::unique_ptr<PieceCache> cache = impl_->borrow_cache();
    for (size_t i = next.fetch_add(1); i < texts.size() && !failed.load(); i = next.fetch_add(1)) {
      try {
        results[i].reserve(texts[i].size() / 3 + 4);
        impl_->encode_into(texts[i], results[i], nullptr, *cache);
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) {
          first_error = std::make_exception_ptr(Error(fmt::format("encode_batch: text {}: {}", i, e.what())));
        }
        failed = true;
      }
    }
    impl_->return_cache(std::move(cache));
  };
  if (thread_count <= 1) {
    work();
  } else {
    std::vector<std::thread> workers;
    workers.reserve(thread_count - 1);
    for (size_t t = 0; t + 1 < thread_count; ++t) workers.emplace_back(work);
    work();
    for (auto& worker : workers) worker.join();
  }
  if (first_error) std::rethrow_exception(first_error);
  return results;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= impl_->id_is_known.size() || !impl_->id_is_known[id]) {
      fail("Tokenizer::decode: id {} at position {} is not a token of {} (vocabulary size {})", id, i,
           impl_->source_path, vocab_size());
    }
    if (skip_special_tokens && impl_->id_is_special[id]) continue;
    bytes += impl_->id_to_bytes[id];
  }
  return utf8::from_bytes_lossy(bytes);
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->token_to_id.find(std::string(token));
  return it == impl_->token_to_id.end() ? -1 : it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_is_known.size() || !impl_->id_is_known[id]) {
    fail("Tokenizer::id_to_token: id {} is not a token of {} (vocabulary size {})", id, impl_->source_path,
         vocab_size());
  }
  return impl_->id_to_token[id];
}

int64_t Tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_to_token.size()); }

std::string Tokenizer::nfc(std::string_view text) {
  utf8::check_valid(text, "Tokenizer::nfc input");
  return unicode::nfc(text);
}

bool Tokenizer::is_nfc_quick(std::string_view text) {
  utf8::check_valid(text, "Tokenizer::is_nfc_quick input");
  return unicode::nfc_quick_check(text) == unicode::QuickCheck::yes;
}

}  // namespace qft::text
