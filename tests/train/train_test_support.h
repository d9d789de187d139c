// Helpers shared by the trainer's test files: a scratch directory, error capture, substring checks.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>

#include "core/error.h"
#include "core/remove_tree.h"
#include "parallel/mpi_communicator.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace qft::train::testing {

// One MPI runtime for the test binary (a world of one), as main() has one for qft-dist.
inline parallel::MpiRuntime& test_mpi() {
  static parallel::MpiRuntime mpi;
  return mpi;
}

// Training and evaluation in the test process's world of one.
inline TrainSummary run_training(const TrainConfig& config) {
  return train::run_training(config, test_mpi().world(), test_mpi().local_rank());
}
inline EvalResult evaluate(const TrainConfig& config, const std::string& adapter_dir = "") {
  return train::evaluate(config, adapter_dir, test_mpi().world(), test_mpi().local_rank());
}

// The message of the qft::Error that `f` throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const qft::Error& e) {
    return e.what();
  }
  return "";
}

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "qft_train_test_XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { remove_tree(path_); }
  std::string operator/(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace qft::train::testing

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "'" << (haystack) << "' lacks '" << (needle) << "'"
