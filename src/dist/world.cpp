#include "dist/world.h"

#include <mpi.h>

#include <vector>

#include "core/error.h"

namespace qft::dist {

namespace {

MPI_Datatype mpi_type(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    default: fail("all_reduce_sum: dtype {} is not supported on the MPI path", c10::toString(type));
  }
}

}  // namespace

World& World::instance() {
  static World world;
  return world;
}

World::World() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    we_initialised_mpi_ = true;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  // Ranks sharing memory are on one node; their order there picks the GPU, whatever the launcher.
  MPI_Comm node_comm;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm);
  MPI_Comm_rank(node_comm, &local_rank_);
  MPI_Comm_free(&node_comm);
}

World::~World() {
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (we_initialised_mpi_ && !finalised) MPI_Finalize();
}

void World::all_reduce_sum(at::Tensor& tensor) const {
  if (size_ == 1) return;
  QFT_CHECK(tensor.is_contiguous() && tensor.device().is_cpu(),
            "all_reduce_sum: the MPI path takes contiguous CPU tensors");
  MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), static_cast<int>(tensor.numel()), mpi_type(tensor.scalar_type()),
                MPI_SUM, MPI_COMM_WORLD);
}

double World::all_reduce_sum(double value) const {
  if (size_ == 1) return value;
  double out = 0;
  MPI_Allreduce(&value, &out, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

int64_t World::all_reduce_sum(int64_t value) const {
  if (size_ == 1) return value;
  int64_t out = 0;
  MPI_Allreduce(&value, &out, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return out;
}

void World::abort_job_if_distributed(int exit_code) {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

void World::barrier() const {
  if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
}

void World::check_same_on_all_ranks(const std::string& what, uint64_t value) const {
  if (size_ == 1) return;
  std::vector<uint64_t> all(size_);
  MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  for (int r = 0; r < size_; ++r) {
    QFT_CHECK(all[r] == all[0], "{} differs between rank 0 and rank {}: every rank must be started alike", what, r);
  }
}

}  // namespace qft::dist
