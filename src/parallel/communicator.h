// A group of ranks and the collectives qft needs, passed explicitly to whatever communicates (never
// fetched from a global). One interface, two implementations: MPI on CPU tensors (mpi_communicator.h,
// CI and CPU runs; CUDA tensors are staged through host memory) and NCCL on GPU streams (the
// distributed issue). A single process is a communicator of size 1 on the same code path.
//
// Buffers are flat: ZeRO reduce-scatters and all-gathers ranges of one contiguous buffer (llm.c's
// zero.cuh), so the collectives take the buffer and the per-rank ranges rather than lists of tensors.
// Element counts are 64-bit everywhere; an implementation whose library counts in int splits the work.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace qft::parallel {

// Elements [begin, end) of a flat buffer.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range& o) const { return begin == o.begin && end == o.end; }
};

// `n` elements in `parts` contiguous ranges, in rank order, whose sizes differ by at most one (the first
// n % parts ranges are one longer). ZeRO's shard of rank r is ranges[r].
std::vector<Range> split_evenly(int64_t n, int parts);

// A collective that may still be running. wait() returns once its result can be read (MPI: the request
// completed; NCCL: the caller's stream waits on the communication stream). Destroying an unfinished Work
// waits for it, so a buffer is never freed under a running collective.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // What this group is ("world", "tensor-parallel", "data-parallel"), for messages.
  virtual const std::string& name() const = 0;

  // Sum over the ranks, in place.
  virtual std::unique_ptr<Work> all_reduce_sum_async(at::Tensor& tensor) = 0;
  void all_reduce_sum(at::Tensor& tensor) { all_reduce_sum_async(tensor)->wait(); }
  double all_reduce_sum(double value);
  int64_t all_reduce_sum(int64_t value);

  // `ranges` has one entry per rank and the ranges tile a contiguous span of the flat 1-D `buffer` in
  // rank order (sizes may differ). Afterwards ranges[rank()] of this rank's buffer holds the sum over
  // ranks of that range; the rest of the buffer is left unspecified.
  virtual std::unique_ptr<Work> reduce_scatter_sum_async(at::Tensor& buffer, const std::vector<Range>& ranges) = 0;
  void reduce_scatter_sum(at::Tensor& buffer, const std::vector<Range>& ranges) {
    reduce_scatter_sum_async(buffer, ranges)->wait();
  }
  // Same `ranges` contract. Afterwards every rank's buffer holds, in ranges[r], what rank r had there.
  virtual std::unique_ptr<Work> all_gather_async(at::Tensor& buffer, const std::vector<Range>& ranges) = 0;
  void all_gather(at::Tensor& buffer, const std::vector<Range>& ranges) { all_gather_async(buffer, ranges)->wait(); }

  // `tensor` on every rank becomes root's.
  virtual void broadcast(at::Tensor& tensor, int root) = 0;
  virtual void barrier() = 0;

  // The sub-group of the ranks that pass the same `color`, ordered by `key` (MPI_Comm_split,
  // ncclCommSplit). Every rank of this communicator must call it.
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) = 0;

  // Every rank must pass the same value (e.g. a config hash); otherwise an error naming the first rank
  // that differs from rank 0.
  void check_same_on_all_ranks(const std::string& what, uint64_t value);

  // Watchdog: a collective that has not completed after `seconds` (0 = wait forever, the default) means
  // another rank died or hangs; this rank then names itself and the collective and ends the whole job
  // (MPI_Abort) instead of waiting forever. MPI watches inside its wait; NCCL with a host thread that
  // follows each collective's completion event (and NCCL's asynchronous errors).
  void set_timeout_seconds(double seconds) { timeout_seconds_ = seconds; }
  double timeout_seconds() const { return timeout_seconds_; }

 private:
  double timeout_seconds_ = 0.0;
};

// Checks the `ranges` contract above against a buffer and a group size; errors name `op`.
void check_ranges(const char* op, const at::Tensor& buffer, const std::vector<Range>& ranges, int group_size);

}  // namespace qft::parallel
