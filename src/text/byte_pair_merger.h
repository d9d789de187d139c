// Byte-pair merging for one pre-tokenized piece: the piece's bytes start as single-byte symbols and
// the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no pair has a
// merge, exactly as `tokenizers`' BPE model does (`Word::merge_all`).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace qft::text {

class BytePairMerger {
 public:
  BytePairMerger();

  void set_byte_symbol(uint8_t byte, int32_t id) { byte_symbol_[byte] = id; }
  int32_t byte_symbol(uint8_t byte) const { return byte_symbol_[byte]; }
  // rank = position in the merges list. A pair listed twice keeps its later rank and result, as
  // `tokenizers` does (it collects the list into a hash map). Returns false for such a repeat.
  bool add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank);
  size_t merge_count() const { return merge_count_; }

  // Appends the ids of `piece` to `ids`.
  void merge(std::string_view piece, std::vector<int32_t>& ids) const;

 private:
  struct Slot {
    uint64_t key;  // left << 32 | right; kEmptyKey when unused
    uint32_t rank;
    int32_t merged;
  };
  static constexpr uint64_t kEmptyKey = ~0ULL;

  // Rank and result of merging (left, right); false when the pair does not merge.
  bool find(int32_t left, int32_t right, uint32_t& rank, int32_t& merged) const {
    const uint64_t key = pair_key(left, right);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Slot& slot = slots_[i];
      if (slot.key == key) {
        rank = slot.rank;
        merged = slot.merged;
        return true;
      }
      if (slot.key == kEmptyKey) return false;
    }
  }
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  size_t slot_of(uint64_t key) const { return static_cast<size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_); }
  void grow();
  void merge_short(std::string_view piece, std::vector<int32_t>& ids) const;
  void merge_long(std::string_view piece, std::vector<int32_t>& ids) const;

  int32_t byte_symbol_[256];
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  int shift_ = 64;
  size_t merge_count_ = 0;
};

}  // namespace qft::text
