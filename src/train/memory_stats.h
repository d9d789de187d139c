// Peak memory for the training log: the CUDA caching allocator's peak of allocated bytes on GPU runs,
// the process's resident high-water mark (VmHWM) on CPU runs.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace qft::train {

int64_t peak_memory_bytes(at::Device device);

}  // namespace qft::train
