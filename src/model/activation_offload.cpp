#include "model/activation_offload.h"

#include <optional>

#include "core/error.h"

#ifdef QFT_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#endif

namespace qft::model {

struct ActivationOffload::Slot {
  at::Tensor host;  // bytes, at least the input's size; kept for later steps
  at::ScalarType dtype = at::kFloat;
  std::vector<int64_t> shape;
  at::Device device{at::kCPU};
  bool saved = false;      // this step's input is in `host`
  at::Tensor restored;     // on its way back (restoring) to `device`
  bool restoring = false;
#ifdef QFT_CUDA
  at::cuda::CUDAEvent arrived;  // the copy back finished (side stream)
#endif
};

struct ActivationOffload::Streams {
#ifdef QFT_CUDA
  std::optional<c10::cuda::CUDAStream> side;
  c10::cuda::CUDAStream for_device(at::Device device) {
    if (!side) side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
    QFT_CHECK(side->device_index() == device.index(), "activation offloading: inputs on {} and on cuda:{}",
              device.str(), static_cast<int>(side->device_index()));
    return *side;
  }
  void synchronize() {
    if (side) side->synchronize();
  }
#else
  void synchronize() {}
#endif
};

namespace {

// Host memory for `bytes`: page-locked when the data comes from a GPU (an asynchronous copy needs it).
// Allocated directly rather than through torch's pinned caching allocator, which rounds every block up to
// a power of two (up to twice the memory for inputs of several GiB).
at::Tensor allocate_host(int64_t bytes, bool pinned) {
  const auto bytes_options = at::TensorOptions().dtype(at::kByte);
#ifdef QFT_CUDA
  if (pinned) {
    void* data = nullptr;
    const cudaError_t err = cudaHostAlloc(&data, static_cast<size_t>(bytes), cudaHostAllocDefault);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // clear it: the error is reported here, not by a later CUDA call
      fail("activation offloading: cannot page-lock {:.2f} GiB of host memory for a layer input ({}); offload "
           "fewer layers (training.activation_offloading_layers) or give the job more host memory",
           bytes / (1024.0 * 1024.0 * 1024.0), cudaGetErrorString(err));
    }
    return at::from_blob(data, {bytes}, [](void* p) { cudaFreeHost(p); }, bytes_options);
  }
#else
  QFT_CHECK(!pinned, "activation offloading: a CUDA tensor in a qft build without CUDA");
#endif
  return at::empty({bytes}, bytes_options);
}

const char* part_name(ActivationOffload::Part part) {
  return part == ActivationOffload::Part::input ? "input" : "mid residual";
}

}  // namespace

ActivationOffload::ActivationOffload(int64_t offloaded_layers)
    : offloaded_layers_(offloaded_layers), streams_(std::make_unique<Streams>()) {
  QFT_CHECK(offloaded_layers >= 0, "activation offloading: {} layers", offloaded_layers);
  for (int64_t i = 0; i < offloaded_layers * kParts; ++i) slots_.push_back(std::make_unique<Slot>());
}

ActivationOffload::~ActivationOffload() {
  // No copy may still read or write a buffer freed below.
  try {
    streams_->synchronize();
  } catch (...) {
  }
}

int64_t ActivationOffload::host_bytes() const {
  int64_t total = 0;
  for (const auto& s : slots_)
    if (s->host.defined()) total += s->host.numel();
  return total;
}

at::Tensor ActivationOffload::host_view(const Slot& s) {
  int64_t numel = 1;
  for (int64_t d : s.shape) numel *= d;
  return s.host.narrow(0, 0, numel * static_cast<int64_t>(c10::elementSize(s.dtype))).view(s.dtype).view(s.shape);
}

at::Tensor ActivationOffload::save(int64_t layer, const at::Tensor& x, Part part) {
  if (!offloads(layer)) return x;
  QFT_CHECK(x.is_contiguous(), "activation offloading: layer {}'s {} is not contiguous", layer, part_name(part));
  Slot& s = slot(layer, part);
  const int64_t bytes = static_cast<int64_t>(x.nbytes());
  if (!s.host.defined() || s.host.numel() < bytes) {
    streams_->synchronize();  // an earlier step's copy may still use the old buffer
    s.host = at::Tensor();
    s.host = allocate_host(bytes, x.is_cuda());
  }
  s.dtype = x.scalar_type();
  s.shape = x.sizes().vec();
  s.device = x.device();
  s.restored = at::Tensor();
  s.restoring = false;
  at::Tensor dst = host_view(s);
  if (x.is_cuda()) {
#ifdef QFT_CUDA
    c10::cuda::CUDAStream side = streams_->for_device(x.device());
    // The copy starts once x is written (compute stream) and overlaps the layer's forward.
    at::cuda::CUDAEvent ready;
    ready.record(c10::cuda::getCurrentCUDAStream(x.device().index()));
    ready.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      dst.copy_(x, /*non_blocking=*/true);
    }
    // The caller drops x: its memory must not be reused before the side stream has read it.
    c10::cuda::CUDACachingAllocator::recordStream(x.storage().data_ptr(), side);
#endif
  } else {
    dst.copy_(x);
  }
  s.saved = true;
  return at::Tensor();
}

void ActivationOffload::start_restore(int64_t layer, Part part) {
  Slot& s = slot(layer, part);
  if (s.restoring) return;
  QFT_CHECK(s.saved, "activation offloading: layer {}'s {} was not saved in this step", layer, part_name(part));
  s.restored = at::empty(s.shape, at::TensorOptions().dtype(s.dtype).device(s.device));
  if (s.device.is_cuda()) {
#ifdef QFT_CUDA
    c10::cuda::CUDAStream side = streams_->for_device(s.device);
    // The new block may have been freed by compute-stream work still queued: write it only after that.
    at::cuda::CUDAEvent allocated;
    allocated.record(c10::cuda::getCurrentCUDAStream(s.device.index()));
    allocated.block(side);
    {
      c10::cuda::CUDAStreamGuard guard(side);
      s.restored.copy_(host_view(s), /*non_blocking=*/true);
    }
    s.arrived.record(side);
    c10::cuda::CUDACachingAllocator::recordStream(s.restored.storage().data_ptr(), side);
#endif
  } else {
    s.restored.copy_(host_view(s));
  }
  s.restoring = true;
}

at::Tensor ActivationOffload::restore(int64_t layer, const at::Tensor& kept, Part part) {
  // This layer's copy first (already under way unless it is the highest offloaded layer): the side stream
  // runs the copies in order, and this one is waited for now.
  if (offloads(layer)) start_restore(layer, part);
  // Then the rest of what this layer saved, then what layer-1 saved (arriving during this layer's backward).
  auto start_saved = [&](int64_t l) {
    for (const Part p : {Part::input, Part::mid_residual})
      if (slot(l, p).saved) start_restore(l, p);
  };
  if (offloads(layer)) start_saved(layer);
  if (offloads(layer - 1)) start_saved(layer - 1);
  if (!offloads(layer)) return kept;
  Slot& s = slot(layer, part);
#ifdef QFT_CUDA
  if (s.device.is_cuda()) s.arrived.block(c10::cuda::getCurrentCUDAStream(s.device.index()));
#endif
  at::Tensor out = std::move(s.restored);
  s.restored = at::Tensor();
  s.restoring = false;
  s.saved = false;
  return out;
}

}  // namespace qft::model
