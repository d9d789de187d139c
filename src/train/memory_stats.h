// Peak memory for the training log: the CUDA caching allocator's peak of allocated bytes on GPU runs,
// the process's resident high-water mark (VmHWM) on CPU runs.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

namespace qft::train {

int64_t peak_memory_bytes(at::Device device);

// A GPU's memory now: what the caching allocator has handed out, and the driver's free and total bytes.
// All zero for a CPU device.
struct DeviceMemory {
  int64_t allocated = 0;
  int64_t free = 0;
  int64_t total = 0;
};
DeviceMemory device_memory(at::Device device);

// The node's physical memory (bytes); 0 when the system does not say.
int64_t host_physical_bytes();

}  // namespace qft::train
