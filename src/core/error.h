// qft::Error is the one exception type for bad input and failed invariants. Every message names
// where the problem is (file, line, key) and what was expected, because users read it in a Slurm log
// long after the job died. The CLI catches it, prints it and exits non-zero.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace qft {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace qft

// QFT_CHECK(cond, "format", args...): throws qft::Error with the formatted message when cond is false.
#define QFT_CHECK(cond, ...)         \
  do {                               \
    if (!(cond)) ::qft::fail(__VA_ARGS__); \
  } while (0)
