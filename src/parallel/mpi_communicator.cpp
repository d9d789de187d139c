#include "parallel/mpi_communicator.h"

#include <algorithm>
#include <climits>
#include <chrono>
#include <functional>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"

namespace qft::parallel {
namespace {

MPI_Datatype mpi_type(at::ScalarType type, const char* op) {
  switch (type) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    default: fail("{}: dtype {} is not supported on the MPI path (fp32, fp64, int64, int32, uint8)", op,
                  c10::toString(type));
  }
}

// The host tensor MPI works on: `t` itself on the CPU, else a host copy (written back by copy_back).
at::Tensor host_tensor(const at::Tensor& t) {
  QFT_CHECK(t.is_contiguous(), "MPI collectives take contiguous tensors");
  return t.device().is_cpu() ? t : t.to(at::kCPU);
}

void copy_back(const at::Tensor& target, const at::Tensor& host) {
  if (!target.device().is_cpu()) target.copy_(host);
}

// Completes `requests`. With a timeout (Communicator::set_timeout_seconds) it polls, and past the
// deadline it reports which collective on which group waited and ends the job: a rank that died or is
// stopped would otherwise leave every other rank waiting forever.
void complete(std::vector<MPI_Request>& requests, double timeout_seconds, const std::string& what) {
  if (requests.empty()) return;
  const int n = static_cast<int>(requests.size());
  if (timeout_seconds <= 0) {
    MPI_Waitall(n, requests.data(), MPI_STATUSES_IGNORE);
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  for (int done = 0;;) {
    MPI_Testall(n, requests.data(), &done, MPI_STATUSES_IGNORE);
    if (done) return;
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waited > timeout_seconds) {
      int rank = 0, size = 1;
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      spdlog::error("rank {} of {}: {} has not completed after {:.0f} s (distributed.collective_timeout): another "
                    "rank died or hangs; ending the job",
                    rank, size, what, waited);
      MPI_Abort(MPI_COMM_WORLD, 3);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// Requests in flight; wait() completes them, then runs `finish` (copies results into place).
class MpiWork final : public Work {
 public:
  MpiWork(std::vector<MPI_Request> requests, std::function<void()> finish, double timeout_seconds, std::string what)
      : requests_(std::move(requests)), finish_(std::move(finish)), timeout_seconds_(timeout_seconds),
        what_(std::move(what)) {}
  ~MpiWork() override { wait(); }
  void wait() override {
    if (done_) return;
    done_ = true;
    complete(requests_, timeout_seconds_, what_);
    if (finish_) finish_();
  }

 private:
  std::vector<MPI_Request> requests_;
  std::function<void()> finish_;
  double timeout_seconds_;
  std::string what_;
  bool done_ = false;
};

class DoneWork final : public Work {
 public:
  void wait() override {}
};

char* element_ptr(const at::Tensor& t, int64_t index) {
  return static_cast<char*>(t.data_ptr()) + index * static_cast<int64_t>(t.element_size());
}

bool fits_one_call(const std::vector<Range>& ranges, int64_t max_count) {
  const int64_t span = ranges.back().end - ranges.front().begin;
  return span <= max_count;
}

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)), max_count_(INT_MAX) {
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiCommunicator::~MpiCommunicator() {
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised && comm_ != MPI_COMM_WORLD && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::set_max_count(int64_t max_count) {
  QFT_CHECK(max_count >= 1 && max_count <= INT_MAX, "set_max_count: {} is outside [1, INT_MAX]", max_count);
  max_count_ = max_count;
}

std::unique_ptr<Work> MpiCommunicator::all_reduce_sum_async(at::Tensor& tensor) {
  if (size_ == 1) return std::make_unique<DoneWork>();
  const MPI_Datatype type = mpi_type(tensor.scalar_type(), "all_reduce_sum");
  at::Tensor host = host_tensor(tensor);
  std::vector<MPI_Request> requests;
  for (int64_t begin = 0; begin < host.numel(); begin += max_count_) {
    const int count = static_cast<int>(std::min(max_count_, host.numel() - begin));
    requests.emplace_back();
    MPI_Iallreduce(MPI_IN_PLACE, element_ptr(host, begin), count, type, MPI_SUM, comm_, &requests.back());
  }
  return std::make_unique<MpiWork>(std::move(requests), [tensor, host] { copy_back(tensor, host); },
                                   timeout_seconds(), describe("all-reduce"));
}

std::unique_ptr<Work> MpiCommunicator::reduce_scatter_sum_async(at::Tensor& buffer, const std::vector<Range>& ranges) {
  check_ranges("reduce_scatter_sum", buffer, ranges, size_);
  if (size_ == 1) return std::make_unique<DoneWork>();
  const MPI_Datatype type = mpi_type(buffer.scalar_type(), "reduce_scatter_sum");
  at::Tensor host = host_tensor(buffer);
  std::vector<MPI_Request> requests;
  if (fits_one_call(ranges, max_count_)) {
    // MPI_IN_PLACE would leave the result at the start of the buffer; a separate receive buffer keeps
    // the contract (the sum lands in this rank's own range).
    std::vector<int> counts(size_);
    for (int r = 0; r < size_; ++r) counts[r] = static_cast<int>(ranges[r].size());
    at::Tensor received = at::empty({ranges[rank_].size()}, host.options());
    requests.emplace_back();
    MPI_Ireduce_scatter(element_ptr(host, ranges.front().begin), received.data_ptr(), counts.data(), type, MPI_SUM,
                        comm_, &requests.back());
    const Range mine = ranges[rank_];
    // A non-blocking collective reads `counts` until it completes: the lambda owns the vector's storage
    // (a move keeps the same heap block) until wait() has run.
    return std::make_unique<MpiWork>(std::move(requests), [buffer, host, received, mine, counts = std::move(counts)] {
      host.narrow(0, mine.begin, mine.size()).copy_(received);
      copy_back(buffer, host);
    }, timeout_seconds(), describe("reduce-scatter"));
  }
  // Too large for one int-counted call: each range is reduced onto its owner in pieces of at most
  // max_count elements.
  for (int r = 0; r < size_; ++r) {
    for (int64_t begin = ranges[r].begin; begin < ranges[r].end; begin += max_count_) {
      const int count = static_cast<int>(std::min(max_count_, ranges[r].end - begin));
      void* data = element_ptr(host, begin);
      requests.emplace_back();
      if (r == rank_) {
        MPI_Ireduce(MPI_IN_PLACE, data, count, type, MPI_SUM, r, comm_, &requests.back());
      } else {
        MPI_Ireduce(data, nullptr, count, type, MPI_SUM, r, comm_, &requests.back());
      }
    }
  }
  return std::make_unique<MpiWork>(std::move(requests), [buffer, host] { copy_back(buffer, host); },
                                   timeout_seconds(), describe("reduce-scatter"));
}

std::unique_ptr<Work> MpiCommunicator::all_gather_async(at::Tensor& buffer, const std::vector<Range>& ranges) {
  check_ranges("all_gather", buffer, ranges, size_);
  if (size_ == 1) return std::make_unique<DoneWork>();
  const MPI_Datatype type = mpi_type(buffer.scalar_type(), "all_gather");
  at::Tensor host = host_tensor(buffer);
  std::vector<MPI_Request> requests;
  if (fits_one_call(ranges, max_count_)) {
    std::vector<int> counts(size_), displacements(size_);
    for (int r = 0; r < size_; ++r) {
      counts[r] = static_cast<int>(ranges[r].size());
      displacements[r] = static_cast<int>(ranges[r].begin - ranges.front().begin);
    }
    requests.emplace_back();
    MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, element_ptr(host, ranges.front().begin), counts.data(),
                    displacements.data(), type, comm_, &requests.back());
    // As above: the arrays live until the collective completes.
    return std::make_unique<MpiWork>(std::move(requests), [buffer, host, counts = std::move(counts),
                                                           displacements = std::move(displacements)] {
      copy_back(buffer, host);
    }, timeout_seconds(), describe("all-gather"));
  }
  // Too large for one int-counted call: each rank broadcasts its range in pieces.
  for (int r = 0; r < size_; ++r) {
    for (int64_t begin = ranges[r].begin; begin < ranges[r].end; begin += max_count_) {
      const int count = static_cast<int>(std::min(max_count_, ranges[r].end - begin));
      requests.emplace_back();
      MPI_Ibcast(element_ptr(host, begin), count, type, r, comm_, &requests.back());
    }
  }
  return std::make_unique<MpiWork>(std::move(requests), [buffer, host] { copy_back(buffer, host); },
                                   timeout_seconds(), describe("all-gather"));
}

void MpiCommunicator::broadcast(at::Tensor& tensor, int root) {
  QFT_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of the {} group ({} ranks)", root, name_,
            size_);
  if (size_ == 1) return;
  const MPI_Datatype type = mpi_type(tensor.scalar_type(), "broadcast");
  at::Tensor host = host_tensor(tensor);
  std::vector<MPI_Request> requests;
  for (int64_t begin = 0; begin < host.numel(); begin += max_count_) {
    const int count = static_cast<int>(std::min(max_count_, host.numel() - begin));
    requests.emplace_back();
    MPI_Ibcast(element_ptr(host, begin), count, type, root, comm_, &requests.back());
  }
  complete(requests, timeout_seconds(), describe("broadcast"));
  copy_back(tensor, host);
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  std::vector<MPI_Request> requests(1);
  MPI_Ibarrier(comm_, &requests[0]);
  complete(requests, timeout_seconds(), describe("barrier"));
}

std::string MpiCommunicator::describe(const char* op) const {
  return fmt::format("the {} on the {} group (rank {} of {} there)", op, name_, rank_, size_);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key, const std::string& name) {
  MPI_Comm sub = MPI_COMM_NULL;
  MPI_Comm_split(comm_, color, key, &sub);
  auto out = std::make_unique<MpiCommunicator>(sub, name);
  out->max_count_ = max_count_;
  return out;
}

MpiRuntime::MpiRuntime() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    we_initialised_mpi_ = true;
  }
  // Errors come back as return codes only where we check them; a failed collective aborts the job
  // (MPI's default) instead of leaving other ranks waiting.
  world_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world");
  // Ranks sharing memory are on one node; their order there picks the GPU, whatever the launcher.
  MPI_Comm node_comm;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_->rank(), MPI_INFO_NULL, &node_comm);
  MPI_Comm_rank(node_comm, &local_rank_);
  MPI_Comm_size(node_comm, &local_size_);
  MPI_Comm_free(&node_comm);
}

MpiRuntime::~MpiRuntime() {
  world_.reset();
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (we_initialised_mpi_ && !finalised) MPI_Finalize();
}

void MpiRuntime::abort_job_if_distributed(int exit_code) {
  int initialised = 0, finalised = 0;
  MPI_Initialized(&initialised);
  MPI_Finalized(&finalised);
  if (!initialised || finalised) return;
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
}

}  // namespace qft::parallel
