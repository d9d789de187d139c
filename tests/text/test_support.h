// Helpers shared by the tests of the torch-free binary (tests/text and tests/data): the message of a
// qft::Error, the Qwen3 tokenizer fixture and scratch directories.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "core/error.h"
#include "text/tokenizer.h"

namespace qft::test {

// The message of the qft::Error that `f` throws, or "" when it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// tokenizer.json of Qwen3: the committed fixture, unpacked by CMake into QFT_TOKENIZER_DIR.
inline std::string qwen3_tokenizer_json() { return std::string(QFT_TOKENIZER_DIR) + "/tokenizer.json"; }

// Loaded once for the whole binary.
inline const text::Tokenizer& qwen3_tokenizer() {
  static const text::Tokenizer tokenizer = text::Tokenizer::from_file(qwen3_tokenizer_json());
  return tokenizer;
}

// Outside the source tree whatever the working directory is, and one per process: two test runs on one
// machine (two checkouts) must not delete each other's files.
inline std::filesystem::path scratch_root() {
  // Removed when the test binary exits.
  struct Root {
    std::filesystem::path path =
        std::filesystem::temp_directory_path() / ("qft-data-tests-" + std::to_string(::getpid()));
    ~Root() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static const Root root;
  return root.path;
}

// A fresh directory named after the running test.
inline std::string scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = scratch_root() / (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace qft::test
