#include "train/data_plan.h"

#include <algorithm>
#include <numeric>
#include <limits>
#include <random>

#include "core/error.h"

namespace qft::train {

uint64_t mix_seed(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9e3779b97f4a7c15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

DataPlan::DataPlan(int64_t num_rows, int64_t micro_batch_size, int64_t accumulation, int64_t world_size, bool shuffle,
                   bool drop_last, uint64_t seed)
    : num_rows_(num_rows),
      micro_batch_size_(micro_batch_size),
      accumulation_(accumulation),
      world_size_(world_size),
      shuffle_(shuffle),
      seed_(seed) {
  QFT_CHECK(num_rows >= 1 && micro_batch_size >= 1 && accumulation >= 1 && world_size >= 1,
            "data plan: {} rows, micro-batch {}, accumulation {}, world {}", num_rows, micro_batch_size, accumulation,
            world_size);
  micro_batches_per_epoch_ = drop_last ? num_rows / micro_batch_size : (num_rows + micro_batch_size - 1) / micro_batch_size;
  QFT_CHECK(micro_batches_per_epoch_ >= 1,
            "the data set has {} rows, fewer than one micro-batch of per_device_train_batch_size = {} "
            "(and dataloader_drop_last is true)",
            num_rows, micro_batch_size);
  const int64_t group = accumulation * world_size;
  steps_per_epoch_ = (micro_batches_per_epoch_ + group - 1) / group;
}

std::vector<int64_t> DataPlan::row_order(int64_t epoch) const {
  std::vector<int64_t> order(num_rows_);
  std::iota(order.begin(), order.end(), 0);
  if (!shuffle_) return order;
  // Fisher-Yates with our own bounded draw: std::shuffle/uniform_int_distribution differ between
  // standard libraries, and a resumed run must see the same order wherever it runs.
  std::mt19937_64 rng(mix_seed(seed_, static_cast<uint64_t>(epoch)));
  for (int64_t i = num_rows_ - 1; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % bound;
    uint64_t draw = rng();
    while (draw >= limit) draw = rng();
    std::swap(order[i], order[static_cast<int64_t>(draw % bound)]);
  }
  return order;
}

std::vector<std::vector<int64_t>> DataPlan::micro_batches(int64_t step, int rank) const {
  QFT_CHECK(step >= 0 && rank >= 0 && rank < world_size_, "data plan: step {} rank {}", step, rank);
  const int64_t epoch = epoch_of(step);
  const int64_t step_in_epoch = step % steps_per_epoch_;
  const std::vector<int64_t> order = row_order(epoch);
  const int64_t group = accumulation_ * world_size_;
  std::vector<std::vector<int64_t>> out;
  for (int64_t m = 0; m < accumulation_; ++m) {
    const int64_t micro_batch = step_in_epoch * group + m * world_size_ + rank;
    if (micro_batch >= micro_batches_per_epoch_) break;
    const int64_t begin = micro_batch * micro_batch_size_;
    const int64_t end = std::min(begin + micro_batch_size_, num_rows_);
    out.emplace_back(order.begin() + begin, order.begin() + end);
  }
  return out;
}

int64_t DataPlan::max_micro_batches(int64_t step) const {
  const int64_t group = accumulation_ * world_size_;
  const int64_t first = (step % steps_per_epoch_) * group;  // rank 0's first micro-batch of the step
  int64_t count = 0;
  for (int64_t m = 0; m < accumulation_; ++m)
    if (first + m * world_size_ < micro_batches_per_epoch_) ++count;
  return count;
}

double DataPlan::epoch_after(int64_t step) const {
  const int64_t epoch = epoch_of(step);
  const int64_t step_in_epoch = step % steps_per_epoch_;
  const int64_t consumed = std::min((step_in_epoch + 1) * accumulation_ * world_size_, micro_batches_per_epoch_);
  return static_cast<double>(epoch) + static_cast<double>(consumed) / static_cast<double>(micro_batches_per_epoch_);
}

}  // namespace qft::train
