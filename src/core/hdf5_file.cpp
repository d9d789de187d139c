#include "core/hdf5_file.h"

#include "core/error.h"

namespace qft::hdf5 {

Hid checked(hid_t id, herr_t (*close)(hid_t), const std::string& path, const char* what) {
  if (id < 0) fail("{}: HDF5 could not {}", path, what);
  return Hid(id, close);
}

void check(herr_t status, const std::string& path, const char* what) {
  if (status < 0) fail("{}: HDF5 could not {}", path, what);
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {

Hid select(hid_t dataset, hsize_t begin, hsize_t count, const std::string& path) {
  Hid file_space = checked(H5Dget_space(dataset), H5Sclose, path, "get a dataspace");
  check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &begin, nullptr, &count, nullptr), path, "select");
  return file_space;
}

}  // namespace

void read_range(hid_t dataset, hid_t type, void* data, hsize_t begin, hsize_t count, const std::string& path) {
  if (count == 0) return;
  Hid file_space = select(dataset, begin, count, path);
  Hid memory_space = checked(H5Screate_simple(1, &count, nullptr), H5Sclose, path, "create a dataspace");
  check(H5Dread(dataset, type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), path, "read");
}

void write_range(hid_t dataset, hid_t type, const void* data, hsize_t begin, hsize_t count, const std::string& path) {
  if (count == 0) return;
  Hid file_space = select(dataset, begin, count, path);
  Hid memory_space = checked(H5Screate_simple(1, &count, nullptr), H5Sclose, path, "create a dataspace");
  check(H5Dwrite(dataset, type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), path, "write");
}

hsize_t dataset_length(hid_t dataset, const std::string& path) {
  Hid space = checked(H5Dget_space(dataset), H5Sclose, path, "get a dataspace");
  QFT_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "{}: expected 1-D datasets", path);
  hsize_t length = 0;
  H5Sget_simple_extent_dims(space.get(), &length, nullptr);
  return length;
}

void write_string_attribute(hid_t object, const char* name, const std::string& value, const std::string& path) {
  Hid string_type = checked(H5Tcopy(H5T_C_S1), H5Tclose, path, "create a string type");
  check(H5Tset_size(string_type.get(), value.size() + 1), path, "size a string type");
  check(H5Tset_cset(string_type.get(), H5T_CSET_UTF8), path, "set UTF-8");
  Hid scalar = checked(H5Screate(H5S_SCALAR), H5Sclose, path, "create a dataspace");
  Hid attribute = checked(H5Acreate2(object, name, string_type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                          path, "create an attribute");
  check(H5Awrite(attribute.get(), string_type.get(), value.c_str()), path, "write an attribute");
}

std::string read_string_attribute(hid_t object, const char* name, const std::string& path) {
  if (H5Aexists(object, name) <= 0) fail("{}: no attribute \"{}\"", path, name);
  Hid attribute = checked(H5Aopen(object, name, H5P_DEFAULT), H5Aclose, path, "open an attribute");
  Hid type = checked(H5Aget_type(attribute.get()), H5Tclose, path, "read an attribute's type");
  std::string text(H5Tget_size(type.get()), '\0');
  check(H5Aread(attribute.get(), type.get(), text.data()), path, "read an attribute");
  text.resize(text.find('\0') == std::string::npos ? text.size() : text.find('\0'));
  return text;
}

}  // namespace qft::hdf5
