// Shared by the libFuzzer harnesses: inputs that qft reads from files are written to a scratch file
// first (one per process), and logging is silenced so that lenient readers do not flood stderr.
// A harness catches qft::Error only: any other exception escaping qft is a finding (it would reach the
// user as an "internal error"), as are crashes, sanitizer reports and timeouts.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace qft::fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// A per-process scratch directory (parallel fuzzing jobs do not share files).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const auto path = std::filesystem::temp_directory_path() / ("qft-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(path);
    return path;
  }();
  return dir;
}

inline std::string write_scratch(const std::string& name, std::string_view bytes) {
  const std::string path = (scratch_dir() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

inline void quiet_logs() { spdlog::set_level(spdlog::level::off); }

}  // namespace qft::fuzz
