// Which rows every rank processes in every optimizer step: a pure function of (seed, step), so a resumed
// run needs only the step number to continue exactly where it stopped.
//
// Per epoch the rows are put in order (file order, or a permutation seeded by (seed, epoch)) and cut
// into micro-batches of `micro_batch_size` rows; the last one is shorter, or dropped with drop_last.
// Consecutive groups of accumulation * world_size micro-batches form one optimizer step; micro-batch m
// of rank r in a step is number (m * world_size + r) of its group. The last group of an epoch may be
// shorter (a rank can then get fewer micro-batches, even none); steps never span two epochs.
#pragma once

#include <cstdint>
#include <vector>

namespace qft::train {

class DataPlan {
 public:
  DataPlan(int64_t num_rows, int64_t micro_batch_size, int64_t accumulation, int64_t world_size, bool shuffle,
           bool drop_last, uint64_t seed);

  int64_t micro_batches_per_epoch() const { return micro_batches_per_epoch_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }

  // Row indices of each micro-batch rank `rank` runs in 0-based optimizer step `step`.
  std::vector<std::vector<int64_t>> micro_batches(int64_t step, int rank) const;
  // The number of micro-batches the busiest rank has in `step` (micro_batches(step, 0).size(), without
  // drawing the order): an epoch's last step may leave other ranks fewer.
  int64_t max_micro_batches(int64_t step) const;

  int64_t epoch_of(int64_t step) const { return step / steps_per_epoch_; }
  // Epochs completed after `step` (0-based), counting micro-batches as HF does (e.g. 1.25).
  double epoch_after(int64_t step) const;

  // The row order of one epoch (identity without shuffle).
  std::vector<int64_t> row_order(int64_t epoch) const;

 private:
  int64_t num_rows_;
  int64_t micro_batch_size_;
  int64_t accumulation_;
  int64_t world_size_;
  bool shuffle_;
  uint64_t seed_;
  int64_t micro_batches_per_epoch_;
  int64_t steps_per_epoch_;
};

// splitmix64: decorrelates seeds that differ in one bit (seed, epoch, micro-step).
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace qft::train
