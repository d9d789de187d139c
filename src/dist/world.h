// The process group every run lives in. qft-dist is always an MPI program: a plain `qft-dist x.yaml`
// is an MPI singleton, a world of one, and takes the same code path as `mpirun -np 8`. Collectives on
// CPU tensors go through MPI here; the distributed issue adds NCCL communicators for GPU tensors and
// the tensor/data-parallel sub-groups beside this.
#pragma once

#include <cstdint>
#include <string>

#include <ATen/ATen.h>

namespace qft::dist {

class World {
 public:
  // Initialises MPI once per process (later calls return the same world).
  static World& instance();

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Rank among the processes on this node: picks the GPU (cuda:local_rank).
  int local_rank() const { return local_rank_; }
  bool is_main() const { return rank_ == 0; }

  // In-place sum over all ranks (a no-op copy-free return in a world of one).
  void all_reduce_sum(at::Tensor& tensor) const;
  double all_reduce_sum(double value) const;
  int64_t all_reduce_sum(int64_t value) const;
  void barrier() const;

  // Every rank must agree (e.g. on a config hash); throws naming the first disagreeing rank.
  void check_same_on_all_ranks(const std::string& what, uint64_t value) const;

  ~World();

  // After a fatal error on this rank: with other ranks running, abort the whole job so that none of them
  // waits forever in a collective; in a world of one (or before MPI started) do nothing.
  static void abort_job_if_distributed(int exit_code);

 private:
  World();
  int rank_ = 0;
  int size_ = 1;
  int local_rank_ = 0;
  bool we_initialised_mpi_ = false;
};

}  // namespace qft::dist
