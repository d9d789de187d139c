// "[16, 1024]" for messages (fmt cannot format ATen's IntArrayRef directly).
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace qft::model {

inline std::string shape_string(at::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

}  // namespace qft::model
