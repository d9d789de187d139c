// The MPI implementation of Communicator, and the process's MPI lifetime.
//
// MpiRuntime is created once, by main(), before anything else: it initialises MPI (a plain `qft-dist`
// is an MPI singleton, a world of one), finds the rank's place on its node (which picks its GPU), and
// hands out the world communicator that main passes down. Collectives take CPU tensors; CUDA tensors
// are staged through host memory (correct, not fast: the NCCL communicator replaces this path on GPUs).
// MPI counts in int, so work larger than `max_count` elements is split into several calls.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace qft::parallel {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed on destruction unless it is MPI_COMM_WORLD).
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_sum_async(at::Tensor& tensor) override;
  std::unique_ptr<Work> reduce_scatter_sum_async(at::Tensor& buffer, const std::vector<Range>& ranges) override;
  std::unique_ptr<Work> all_gather_async(at::Tensor& buffer, const std::vector<Range>& ranges) override;
  void broadcast(at::Tensor& tensor, int root) override;
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override;

  // Largest element count passed to one MPI call (INT_MAX by default). Tests lower it to exercise the
  // split path with small buffers.
  void set_max_count(int64_t max_count);

 private:
  // "the all-reduce on the data-parallel group (rank 1 of 2 there)", for the watchdog's message.
  std::string describe(const char* op) const;

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0;
  int size_ = 1;
  int64_t max_count_;
};

class MpiRuntime {
 public:
  MpiRuntime();  // MPI_Init_thread unless MPI is already initialised
  ~MpiRuntime();  // MPI_Finalize if this object initialised it
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  Communicator& world() { return *world_; }
  // Rank among the processes sharing this node's memory: picks the GPU (cuda:local_rank).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // After a fatal error on this rank: with other ranks running, abort the whole job so that none of them
  // waits forever in a collective; in a world of one (or before MPI started) do nothing.
  static void abort_job_if_distributed(int exit_code);

 private:
  bool we_initialised_mpi_ = false;
  std::unique_ptr<MpiCommunicator> world_;
  int local_rank_ = 0;
  int local_size_ = 1;
};

}  // namespace qft::parallel
