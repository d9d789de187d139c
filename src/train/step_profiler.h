// training.profile_steps: [first, last] records optimizer steps first..last (1-based, as logged) with
// libtorch's Kineto profiler — CPU ops (the ATen dispatcher's record functions) and, on a GPU, every CUDA
// kernel, memcpy and NCCL kernel through CUPTI — and writes a Chrome trace per rank to
// output_dir/profile/trace_rank<r>.json (chrome://tracing, Perfetto, or tests/tools/profile_summary.py
// for the time per kernel category and the GPU's idle fraction). Each profiled step is a user-scope range
// "ProfilerStep#<step>", as torch.profiler names them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include <c10/core/Device.h>

namespace at {
class RecordFunction;
}

namespace qft::train {

class StepProfiler {
 public:
  // `steps` = {0, 0}: off. A window past `total_steps` is cut at the run's last step.
  StepProfiler(std::array<int64_t, 2> steps, int64_t total_steps, const std::string& output_dir, int rank,
               at::Device device);
  // An active profiler (the run failed inside the window) is stopped without writing a trace.
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // Around each optimizer step (global_step = the 1-based step being run): the profiler starts before
  // `first` (or the first step of a resumed run inside the window) and stops, writing the trace, after `last`.
  void before_step(int64_t global_step);
  void after_step(int64_t global_step);

  bool active() const { return active_; }
  const std::string& trace_path() const { return trace_path_; }

 private:
  int64_t first_ = 0, last_ = 0;
  std::string trace_path_;
  at::Device device_;
  bool active_ = false;
  std::string step_name_;
  std::unique_ptr<at::RecordFunction> step_range_;
};

}  // namespace qft::train
