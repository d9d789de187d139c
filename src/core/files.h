// Small file helpers shared by every reader and writer: whole-file reads with clear errors, and
// atomic writes (temporary file + rename) so an interrupted run never leaves a half-written output
// that looks complete.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace qft {

// Reads a whole file; throws qft::Error naming the path when it cannot.
std::string read_file(const std::string& path);

// Writes `data` to `path` through `path + ".tmp"` and a rename.
void write_file_atomic(const std::string& path, std::string_view data);

bool file_exists(const std::string& path);

// Calls `f(line, line_number)` (1-based) for every line of the file with something besides blanks and a
// trailing '\r' (JSONL readers: a final newline or an empty line is not a record).
void for_each_nonblank_line(const std::string& path,
                            const std::function<void(const std::string& line, size_t line_number)>& f);

}  // namespace qft
