#include "train/step_profiler.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <ATen/record_function.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <spdlog/spdlog.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include "core/error.h"

namespace qft::train {

namespace fs = std::filesystem;
namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

namespace {

// CPU ops always; CUDA kernels, memcpys and NCCL kernels (CUPTI) when the run is on a GPU.
std::set<ActivityType> activities_for(at::Device device) {
  std::set<ActivityType> activities = {ActivityType::CPU};
  if (device.is_cuda()) activities.insert(ActivityType::CUDA);
  return activities;
}

// Kernels still queued when the window closes belong to it: wait for them before the profiler stops.
void synchronize(at::Device device) {
  if (device.is_cpu()) return;
  c10::impl::getDeviceGuardImpl(device.type())->synchronizeDevice(device.index());
}

}  // namespace

StepProfiler::StepProfiler(std::array<int64_t, 2> steps, int64_t total_steps, const std::string& output_dir, int rank,
                           at::Device device)
    : first_(steps[0]), last_(std::min(steps[1], total_steps)), device_(device) {
  if (first_ <= 0) return;
  trace_path_ = (fs::path(output_dir) / "profile" / ("trace_rank" + std::to_string(rank) + ".json")).string();
  if (first_ > last_ && rank == 0) {
    spdlog::warn("training.profile_steps starts at step {} but the run ends at step {}: nothing is profiled", first_,
                 total_steps);
  }
}

StepProfiler::~StepProfiler() {
  if (!active_) return;
  step_range_.reset();
  try {
    kineto::disableProfiler();
  } catch (const std::exception& e) {
    spdlog::warn("stopping the profiler after a failed step: {}", e.what());
  }
}

void StepProfiler::before_step(int64_t global_step) {
  if (first_ <= 0 || global_step < first_ || global_step > last_) return;
  if (!active_) {
    const ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
    const std::set<ActivityType> activities = activities_for(device_);
    synchronize(device_);  // the work of earlier steps stays out of the window
    kineto::prepareProfiler(config, activities);
    kineto::enableProfiler(config, activities);
    active_ = true;
  }
  // The range must start after the profiler is on: a RecordFunction samples its callbacks when made.
  step_name_ = "ProfilerStep#" + std::to_string(global_step);  // the range keeps a view of the name
  step_range_ = std::make_unique<at::RecordFunction>(at::RecordScope::USER_SCOPE);
  step_range_->before(std::string_view(step_name_));
}

void StepProfiler::after_step(int64_t global_step) {
  if (!active_) return;
  // No synchronization between the profiled steps (that would change what is measured), only at the end so
  // the last step's kernels are in the trace.
  if (global_step >= last_) synchronize(device_);
  step_range_.reset();
  if (global_step < last_) return;
  std::unique_ptr<kineto::ProfilerResult> result = kineto::disableProfiler();
  active_ = false;
  QFT_CHECK(result != nullptr, "training.profile_steps: the profiler returned no result");
  std::error_code ec;
  fs::create_directories(fs::path(trace_path_).parent_path(), ec);
  QFT_CHECK(!ec, "training.profile_steps: cannot create {} ({})", fs::path(trace_path_).parent_path().string(),
            ec.message());
  result->save(trace_path_);
  QFT_CHECK(fs::exists(trace_path_), "training.profile_steps: the profiler wrote no trace to {}", trace_path_);
  spdlog::info("profiled steps {}..{}: {} (summary: tests/tools/profile_summary.py {})", first_, last_, trace_path_,
               trace_path_);
}

}  // namespace qft::train
