// Recursive delete without std::filesystem::remove_all: libtorch.so exports its own copy of that
// function (with weak references to recursive_directory_iterator that resolve to null), and the
// dynamic linker binds our calls to it, so fs::remove_all segfaults in every binary linked with
// libtorch. This uses POSIX nftw instead.
#pragma once

#include <string>

namespace qft {

// Removes `path` (a file or a directory tree); a missing path is not an error. Throws qft::Error
// naming the entry that could not be removed.
void remove_tree(const std::string& path);

}  // namespace qft
