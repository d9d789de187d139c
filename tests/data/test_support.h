// Shared helpers of the data tests: scratch directories and the Qwen3 tokenizer fixture.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "core/files.h"
#include "text/tokenizer.h"

namespace qft::data::testing {

// Outside the source tree whatever the working directory is.
inline std::filesystem::path scratch_root() { return std::filesystem::temp_directory_path() / "qft-data-tests"; }

// A fresh directory named after the running test.
inline std::string scratch_dir() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const auto dir = scratch_root() /
                   (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// tokenizer.json of Qwen3: the committed fixture (xz-compressed), unpacked once.
inline std::string qwen3_tokenizer_json() {
  const auto unpacked = scratch_root() / "qwen3-tokenizer" / "tokenizer.json";
  if (!std::filesystem::exists(unpacked)) {
    std::filesystem::create_directories(unpacked.parent_path());
    const std::string packed = std::string(QFT_SOURCE_DIR) + "/tests/fixtures/qwen3-tokenizer/tokenizer.json.xz";
    const std::string command = "xz -dc '" + packed + "' > '" + unpacked.string() + ".tmp' && mv '" +
                                unpacked.string() + ".tmp' '" + unpacked.string() + "'";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
  }
  return unpacked.string();
}

inline const text::Tokenizer& qwen3_tokenizer() {
  static const text::Tokenizer tokenizer = text::Tokenizer::from_file(qwen3_tokenizer_json());
  return tokenizer;
}

}  // namespace qft::data::testing
