#include "core/files.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace qft {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QFT_CHECK(in.good(), "{}: cannot open file ({})", path, std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  QFT_CHECK(!in.bad(), "{}: read error", path);
  return buffer.str();
}

void write_file_atomic(const std::string& path, std::string_view data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    QFT_CHECK(out.good(), "{}: cannot create file ({})", tmp, std::strerror(errno));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    QFT_CHECK(out.good(), "{}: write failed ({})", tmp, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  QFT_CHECK(!ec, "{}: cannot rename {} into place ({})", path, tmp, ec.message());
}

void for_each_nonblank_line(const std::string& path,
                            const std::function<void(const std::string& line, size_t line_number)>& f) {
  const std::string content = read_file(path);
  size_t line_number = 0, begin = 0;
  while (begin < content.size()) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    ++line_number;
    const std::string line = content.substr(begin, end - begin);
    begin = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    f(line, line_number);
  }
}

bool file_exists(const std::string& path) {
  std::error_code ec;  // a name too long or a path through a file is "not there", not an exception
  return std::filesystem::exists(path, ec);
}

}  // namespace qft
