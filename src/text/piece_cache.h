// Per-thread cache piece bytes -> ids. Real text repeats its words, so most pieces skip merging.
// Direct mapped with a fixed number of slots: bounded memory, no locking, and a slot's string and
// vector keep their capacity when overwritten, so a warm cache does not allocate.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace qft::text {

class PieceCache {
 public:
  static constexpr size_t kSlots = size_t{1} << 16;
  static constexpr size_t kMaxPieceBytes = 255;  // longer pieces are rare and merged directly

  PieceCache() : slots_(kSlots) {}

  // The calling thread's cache for single encode() calls, emptied when it last served a different
  // tokenizer instance. (encode_batch workers borrow caches from the tokenizer's pool instead, so
  // that short-lived threads do not start cold.)
  static PieceCache& for_thread(uint64_t owner) {
    thread_local PieceCache cache;
    if (cache.owner_ != owner) {
      cache.slots_.assign(kSlots, Slot{});
      cache.owner_ = owner;
    }
    return cache;
  }

  // Appends the cached ids of `piece` and returns true, or returns false on a miss.
  bool lookup(std::string_view piece, size_t hash, std::vector<int32_t>& ids) const {
    const Slot& slot = slots_[hash & (kSlots - 1)];
    if (slot.hash != hash || slot.piece != piece) return false;
    ids.insert(ids.end(), slot.ids.begin(), slot.ids.end());
    return true;
  }

  void store(std::string_view piece, size_t hash, const int32_t* ids, size_t count) {
    Slot& slot = slots_[hash & (kSlots - 1)];
    slot.hash = hash;
    slot.piece.assign(piece.data(), piece.size());
    slot.ids.assign(ids, ids + count);
  }

  static size_t hash_of(std::string_view piece) { return std::hash<std::string_view>{}(piece); }

 private:
  struct Slot {
    size_t hash = 0;
    std::string piece;
    std::vector<int32_t> ids;
  };
  uint64_t owner_ = 0;
  std::vector<Slot> slots_;
};

}  // namespace qft::text
