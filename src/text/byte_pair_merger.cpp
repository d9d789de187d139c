#include "text/byte_pair_merger.h"

#include <queue>

namespace qft::text {
namespace {

// Pieces up to this many bytes are merged by rescanning a small rank array (cache friendly, no
// heap); longer ones use a priority queue so that a 100 kB run of letters stays O(n log n).
constexpr size_t kShortPieceBytes = 64;
constexpr uint32_t kNoRank = UINT32_MAX;

}  // namespace

BytePairMerger::BytePairMerger() {
  for (int32_t& id : byte_symbol_) id = -1;
  slots_.assign(1024, Slot{kEmptyKey, 0, 0});
  mask_ = slots_.size() - 1;
  shift_ = 64 - 10;
}

void BytePairMerger::grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(old.size() * 2, Slot{kEmptyKey, 0, 0});
  mask_ = slots_.size() - 1;
  shift_ -= 1;
  for (const Slot& slot : old) {
    if (slot.key == kEmptyKey) continue;
    size_t i = slot_of(slot.key);
    while (slots_[i].key != kEmptyKey) i = (i + 1) & mask_;
    slots_[i] = slot;
  }
}

bool BytePairMerger::add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank) {
  // Keep the load factor at or below 1/2 so that probes stay short.
  if ((merge_count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = pair_key(left, right);
  size_t i = slot_of(key);
  while (slots_[i].key != kEmptyKey) {
    if (slots_[i].key == key) {
      slots_[i].rank = rank;
      slots_[i].merged = merged;
      return false;
    }
    i = (i + 1) & mask_;
  }
  slots_[i] = Slot{key, rank, merged};
  ++merge_count_;
  return true;
}

void BytePairMerger::merge(std::string_view piece, std::vector<int32_t>& ids) const {
  if (piece.size() == 1) {
    ids.push_back(byte_symbol_[static_cast<unsigned char>(piece[0])]);
  } else if (piece.size() <= kShortPieceBytes) {
    merge_short(piece, ids);
  } else {
    merge_long(piece, ids);
  }
}

void BytePairMerger::merge_short(std::string_view piece, std::vector<int32_t>& ids) const {
  int32_t symbols[kShortPieceBytes];
  uint32_t pair_rank[kShortPieceBytes];  // pair_rank[i]: rank of (symbols[i], symbols[i+1])
  int32_t pair_merged[kShortPieceBytes];
  size_t count = piece.size();
  for (size_t i = 0; i < count; ++i) symbols[i] = byte_symbol_[static_cast<unsigned char>(piece[i])];
  for (size_t i = 0; i + 1 < count; ++i) {
    if (!find(symbols[i], symbols[i + 1], pair_rank[i], pair_merged[i])) pair_rank[i] = kNoRank;
  }
  while (count > 1) {
    size_t best = 0;
    uint32_t best_rank = kNoRank;
    for (size_t i = 0; i + 1 < count; ++i) {
      if (pair_rank[i] < best_rank) {  // strict: the leftmost of equal ranks wins
        best_rank = pair_rank[i];
        best = i;
      }
    }
    if (best_rank == kNoRank) break;
    symbols[best] = pair_merged[best];
    for (size_t i = best + 1; i + 1 < count; ++i) {
      symbols[i] = symbols[i + 1];
      pair_rank[i] = pair_rank[i + 1];
      pair_merged[i] = pair_merged[i + 1];
    }
    --count;
    // Only the pairs touching the merged symbol changed.
    if (best > 0 && !find(symbols[best - 1], symbols[best], pair_rank[best - 1], pair_merged[best - 1])) {
      pair_rank[best - 1] = kNoRank;
    }
    if (best + 1 < count && !find(symbols[best], symbols[best + 1], pair_rank[best], pair_merged[best])) {
      pair_rank[best] = kNoRank;
    }
  }
  ids.insert(ids.end(), symbols, symbols + count);
}

void BytePairMerger::merge_long(std::string_view piece, std::vector<int32_t>& ids) const {
  // Doubly linked symbols that keep the index of their first byte, and a min-heap of candidate
  // merges ordered by (rank, left index); stale candidates are recognised and dropped when popped.
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    uint32_t rank;
    int32_t left;
    int32_t left_id;  // the pair's ids when queued: a candidate is stale once either changed
    int32_t right_id;
    int32_t merged;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> symbols(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    symbols[i] = Symbol{byte_symbol_[static_cast<unsigned char>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
  }
  std::vector<Candidate> heap_storage;
  heap_storage.reserve(static_cast<size_t>(n));
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue(std::greater<Candidate>(),
                                                                                       std::move(heap_storage));
  auto push_candidate = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    uint32_t rank;
    int32_t merged;
    if (find(symbols[left].id, symbols[right].id, rank, merged)) {
      queue.push(Candidate{rank, left, symbols[left].id, symbols[right].id, merged});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_candidate(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    if (!left.alive || left.next < 0 || left.id != top.left_id) continue;
    Symbol& right = symbols[left.next];
    // Same ids, same merge: no second hash lookup needed.
    if (right.id != top.right_id) continue;
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(top.left);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = symbols[i].next) ids.push_back(symbols[i].id);
}

}  // namespace qft::text
