#include "core/remove_tree.h"

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"

namespace qft {

namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path) == 0 ? 0 : errno; }

}  // namespace

void remove_tree(const std::string& path) {
  struct stat info;
  if (lstat(path.c_str(), &info) != 0) return;  // nothing there
  // FTW_DEPTH: children before their directory; FTW_PHYS: never follow symlinks out of the tree.
  const int rc = nftw(path.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  QFT_CHECK(rc == 0, "cannot remove {} ({})", path, std::strerror(rc > 0 ? rc : errno));
}

}  // namespace qft
