#include "parallel/nccl_communicator.h"

#include "core/error.h"

#ifdef QFT_NCCL
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include <mpi.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#endif

namespace qft::parallel {

#ifndef QFT_NCCL

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, const std::string& name) {
  fail("{}: this qft build has no NCCL (it was not found when qft was configured); GPU collectives are unavailable",
       name);
}

#else

namespace {

#define QFT_NCCL_CHECK(call, what)                                                                    \
  do {                                                                                                \
    const ncclResult_t qft_rc = (call);                                                               \
    QFT_CHECK(qft_rc == ncclSuccess || qft_rc == ncclInProgress, "NCCL {} failed on the {} group: {}", \
              what, name_, ncclGetErrorString(qft_rc));                                              \
  } while (0)

ncclDataType_t nccl_type(at::ScalarType type, const char* op) {
  switch (type) {
    case at::kFloat: return ncclFloat32;
    case at::kDouble: return ncclFloat64;
    case at::kBFloat16: return ncclBfloat16;
    case at::kHalf: return ncclFloat16;
    case at::kLong: return ncclInt64;
    case at::kInt: return ncclInt32;
    case at::kByte: return ncclUint8;
    default: fail("{}: dtype {} is not supported on the NCCL path", op, c10::toString(type));
  }
}

char* element_ptr(const at::Tensor& t, int64_t index) {
  return static_cast<char*>(t.data_ptr()) + index * static_cast<int64_t>(t.element_size());
}

bool equal_sizes(const std::vector<Range>& ranges) {
  for (const Range& r : ranges)
    if (r.size() != ranges.front().size()) return false;
  return true;
}

// The caller's stream waits on `done`; a CPU tensor staged through `device_copy` is copied back.
class NcclWork final : public Work {
 public:
  NcclWork(std::shared_ptr<at::cuda::CUDAEvent> done, at::Tensor cpu_target, at::Tensor device_copy)
      : done_(std::move(done)), cpu_target_(std::move(cpu_target)), device_copy_(std::move(device_copy)) {}
  ~NcclWork() override { wait(); }
  void wait() override {
    if (waited_) return;
    waited_ = true;
    done_->block(c10::cuda::getCurrentCUDAStream());
    if (cpu_target_.defined()) cpu_target_.copy_(device_copy_);  // synchronous: the result is needed on the host
  }

 private:
  std::shared_ptr<at::cuda::CUDAEvent> done_;
  at::Tensor cpu_target_, device_copy_;
  bool waited_ = false;
};

// NCCL collectives run on a stream: a rank whose peer died or is stopped does not wait in a call the way an
// MPI rank does, it blocks later in whatever synchronises with the stream (a loss .item()), forever. The
// watchdog is a host thread that follows every collective's completion event: one still pending after
// the communicator's timeout (distributed.collective_timeout), or an asynchronous NCCL error, is logged
// naming this rank, the collective and the group, and the whole job is ended (MPI_Abort) — the MPI
// communicator's watchdog does the same from inside its wait.
class NcclWatchdog {
 public:
  NcclWatchdog(ncclComm_t comm, std::string group, c10::DeviceIndex device)
      : comm_(comm), group_(std::move(group)), device_(device), thread_([this] { loop(); }) {}
  ~NcclWatchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  // `done` is recorded after the collective `what` on the communication stream; 0 s: never times out.
  void watch(std::shared_ptr<at::cuda::CUDAEvent> done, double timeout_seconds, const char* what) {
    std::lock_guard<std::mutex> lock(mutex_);
    pending_.push_back({std::move(done), std::chrono::steady_clock::now(), timeout_seconds, what});
  }

 private:
  struct Watched {
    std::shared_ptr<at::cuda::CUDAEvent> done;
    std::chrono::steady_clock::time_point start;
    double timeout_seconds;
    const char* what;
  };

  [[noreturn]] void end_job(const std::string& why) {
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    spdlog::error("rank {} of {}: {}; ending the job", rank, size, why);
    spdlog::default_logger()->flush();
    MPI_Abort(MPI_COMM_WORLD, 3);
    std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
  }

  void loop() {
    c10::cuda::CUDAGuard guard(device_);
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stop_) {
      // Completion is in stream order: only the oldest pending collective can be the one that hangs.
      while (!pending_.empty() && pending_.front().done->query()) pending_.pop_front();
      if (!pending_.empty()) {
        const Watched& w = pending_.front();
        const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - w.start).count();
        if (w.timeout_seconds > 0 && waited > w.timeout_seconds) {
          end_job(fmt::format("NCCL {} on the {} group has not completed after {:.0f} s "
                              "(distributed.collective_timeout): another rank died or hangs",
                              w.what, group_, waited));
        }
      }
      ncclResult_t async_error = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async_error) == ncclSuccess && async_error != ncclSuccess &&
          async_error != ncclInProgress) {
        end_job(fmt::format("NCCL reported an error on the {} group: {}", group_, ncclGetErrorString(async_error)));
      }
      wake_.wait_for(lock, std::chrono::milliseconds(100));
    }
  }

  ncclComm_t comm_;
  std::string group_;
  c10::DeviceIndex device_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Watched> pending_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, std::string name, c10::DeviceIndex device)
      : comm_(comm), name_(std::move(name)), device_(device),
        stream_(c10::cuda::getStreamFromPool(/*isHighPriority=*/true, device)) {
    QFT_NCCL_CHECK(ncclCommUserRank(comm_, &rank_), "rank query");
    QFT_NCCL_CHECK(ncclCommCount(comm_, &size_), "size query");
    watchdog_ = std::make_unique<NcclWatchdog>(comm_, name_, device_);
  }
  ~NcclCommunicator() override {
    watchdog_.reset();  // before the communicator it polls goes away
    if (comm_ != nullptr) ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

  std::unique_ptr<Work> all_reduce_sum_async(at::Tensor& tensor) override {
    return run(tensor, "all-reduce", [&](char* base, ncclDataType_t type) {
      QFT_NCCL_CHECK(ncclAllReduce(base, base, static_cast<size_t>(tensor.numel()), type, ncclSum, comm_, stream_),
                     "all-reduce");
    });
  }

  std::unique_ptr<Work> reduce_scatter_sum_async(at::Tensor& buffer, const std::vector<Range>& ranges) override {
    check_ranges("reduce_scatter_sum", buffer, ranges, size_);
    return run(buffer, "reduce-scatter", [&](char* base, ncclDataType_t type) {
      const size_t element = buffer.element_size();
      if (equal_sizes(ranges)) {
        // In place: NCCL's receive buffer is the send buffer + rank * count, which is this rank's range.
        QFT_NCCL_CHECK(ncclReduceScatter(base + ranges.front().begin * element, base + ranges[rank_].begin * element,
                                         static_cast<size_t>(ranges.front().size()), type, ncclSum, comm_, stream_),
                       "reduce-scatter");
        return;
      }
      // Uneven ranges: each range reduced onto its owner, in one group.
      QFT_NCCL_CHECK(ncclGroupStart(), "group start");
      for (int r = 0; r < size_; ++r) {
        char* p = base + ranges[r].begin * element;
        QFT_NCCL_CHECK(ncclReduce(p, p, static_cast<size_t>(ranges[r].size()), type, ncclSum, r, comm_, stream_),
                       "reduce");
      }
      QFT_NCCL_CHECK(ncclGroupEnd(), "group end");
    });
  }

  std::unique_ptr<Work> all_gather_async(at::Tensor& buffer, const std::vector<Range>& ranges) override {
    check_ranges("all_gather", buffer, ranges, size_);
    return run(buffer, "all-gather", [&](char* base, ncclDataType_t type) {
      const size_t element = buffer.element_size();
      if (equal_sizes(ranges)) {
        QFT_NCCL_CHECK(ncclAllGather(base + ranges[rank_].begin * element, base + ranges.front().begin * element,
                                     static_cast<size_t>(ranges.front().size()), type, comm_, stream_),
                       "all-gather");
        return;
      }
      QFT_NCCL_CHECK(ncclGroupStart(), "group start");
      for (int r = 0; r < size_; ++r) {
        char* p = base + ranges[r].begin * element;
        QFT_NCCL_CHECK(ncclBroadcast(p, p, static_cast<size_t>(ranges[r].size()), type, r, comm_, stream_),
                       "broadcast");
      }
      QFT_NCCL_CHECK(ncclGroupEnd(), "group end");
    });
  }

  void broadcast(at::Tensor& tensor, int root) override {
    QFT_CHECK(root >= 0 && root < size_, "broadcast: root {} is not a rank of the {} group ({} ranks)", root, name_,
              size_);
    run(tensor, "broadcast", [&](char* base, ncclDataType_t type) {
      QFT_NCCL_CHECK(ncclBroadcast(base, base, static_cast<size_t>(tensor.numel()), type, root, comm_, stream_),
                     "broadcast");
    })->wait();
  }

  void barrier() override {
    at::Tensor one = at::ones({1}, at::TensorOptions().dtype(at::kInt));
    all_reduce_sum(one);  // a CPU tensor: returns once every rank has joined
  }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) override {
    ncclComm_t sub = nullptr;
    QFT_NCCL_CHECK(ncclCommSplit(comm_, color, key, &sub, nullptr), "split");
    QFT_CHECK(sub != nullptr, "NCCL split of the {} group gave no communicator for color {}", name_, color);
    return std::make_unique<NcclCommunicator>(sub, name, device_);
  }

 private:
  // Enqueues `launch(base pointer, type)` on the communication stream after the caller's queued work.
  template <typename Launch>
  std::unique_ptr<Work> run(at::Tensor& tensor, const char* op, Launch&& launch) {
    QFT_CHECK(tensor.is_contiguous(), "NCCL {}: the tensor must be contiguous", op);
    const ncclDataType_t type = nccl_type(tensor.scalar_type(), op);
    c10::cuda::CUDAGuard guard(device_);
    at::Tensor cpu_target, device_tensor = tensor;
    if (tensor.device().is_cpu()) {
      cpu_target = tensor;
      device_tensor = tensor.to(at::Device(at::kCUDA, device_));
    } else {
      QFT_CHECK(tensor.device().index() == device_, "NCCL {}: the tensor is on {} but the {} group runs on cuda:{}", op,
                tensor.device().str(), name_, device_);
    }
    const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream(device_);
    at::cuda::CUDAEvent ready;
    ready.record(caller);
    ready.block(stream_);
    // The allocator must not hand this memory to another tensor until the collective is done with it.
    c10::cuda::CUDACachingAllocator::recordStream(device_tensor.storage().data_ptr(), stream_);
    launch(static_cast<char*>(device_tensor.data_ptr()), type);
    auto done = std::make_shared<at::cuda::CUDAEvent>();
    done->record(stream_);
    watchdog_->watch(done, timeout_seconds(), op);
    return std::make_unique<NcclWork>(done, cpu_target, device_tensor);
  }

  ncclComm_t comm_;
  std::string name_;
  c10::DeviceIndex device_;
  c10::cuda::CUDAStream stream_;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<NcclWatchdog> watchdog_;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, const std::string& name) {
  const c10::DeviceIndex device = c10::cuda::current_device();
  ncclUniqueId id;
  at::Tensor id_bytes = at::zeros({static_cast<int64_t>(sizeof(id))}, at::TensorOptions().dtype(at::kByte));
  if (bootstrap.rank() == 0) {
    const ncclResult_t rc = ncclGetUniqueId(&id);
    QFT_CHECK(rc == ncclSuccess, "NCCL could not create a unique id for the {} group: {}", name, ncclGetErrorString(rc));
    std::memcpy(id_bytes.data_ptr(), &id, sizeof(id));
  }
  bootstrap.broadcast(id_bytes, 0);
  std::memcpy(&id, id_bytes.data_ptr(), sizeof(id));
  c10::cuda::CUDAGuard guard(device);
  ncclComm_t comm = nullptr;
  const ncclResult_t rc = ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank());
  QFT_CHECK(rc == ncclSuccess, "NCCL could not create the {} group ({} ranks, this is rank {} on cuda:{}): {}", name,
            bootstrap.size(), bootstrap.rank(), device, ncclGetErrorString(rc));
  return std::make_unique<NcclCommunicator>(comm, name, device);
}

#endif

}  // namespace qft::parallel
