// The HDF5 C API as the token cache and the checkpoint shards use it: identifiers closed by RAII, every
// failure a qft::Error naming the file and what could not be done (HDF5's own error stack is silenced:
// its dump would only confuse the log), 1-D hyperslab reads and writes, and a JSON string attribute.
#pragma once

#include <string>
#include <utility>

#include <hdf5.h>

namespace qft::hdf5 {

// Owns one HDF5 identifier; closes it with the matching function.
class Hid {
 public:
  Hid() = default;
  Hid(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Hid(const Hid&) = delete;
  Hid& operator=(const Hid&) = delete;
  Hid(Hid&& other) noexcept { *this = std::move(other); }
  Hid& operator=(Hid&& other) noexcept {
    reset();
    std::swap(id_, other.id_);
    std::swap(close_, other.close_);
    return *this;
  }
  ~Hid() { reset(); }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = -1;
  }
  hid_t get() const { return id_; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

// `id` owned, or a qft::Error "<path>: HDF5 could not <what>" when it is negative.
Hid checked(hid_t id, herr_t (*close)(hid_t), const std::string& path, const char* what);
void check(herr_t status, const std::string& path, const char* what);
void silence_errors();

// count elements at [begin, begin + count) of a 1-D dataset.
void read_range(hid_t dataset, hid_t type, void* data, hsize_t begin, hsize_t count, const std::string& path);
void write_range(hid_t dataset, hid_t type, const void* data, hsize_t begin, hsize_t count, const std::string& path);
hsize_t dataset_length(hid_t dataset, const std::string& path);

// A UTF-8 string attribute of `object` (a file or dataset).
void write_string_attribute(hid_t object, const char* name, const std::string& value, const std::string& path);
std::string read_string_attribute(hid_t object, const char* name, const std::string& path);

}  // namespace qft::hdf5
