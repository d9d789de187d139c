#include "data/token_cache.h"

#include <cstdio>
#include <filesystem>

#include <hdf5.h>

#include "core/error.h"
#include "core/json_reader.h"

namespace qft::data {

namespace {

constexpr hsize_t kTokenChunk = 1 << 16;
constexpr hsize_t kOffsetChunk = 1 << 14;
constexpr size_t kFlushTokens = 1 << 20;
constexpr const char* kMetadataAttribute = "qft_metadata";

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

Hid checked(hid_t id, herr_t (*close)(hid_t), const std::string& path, const char* what) {
  if (id < 0) fail("{}: HDF5 could not {}", path, what);
  return Hid(id, close);
}

void check(herr_t status, const std::string& path, const char* what) {
  if (status < 0) fail("{}: HDF5 could not {}", path, what);
}

void silence_hdf5_errors() {
  // Failures become qft::Error with the path; HDF5's own stack dump would only confuse the log.
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

Hid create_extensible(hid_t file, const char* name, hid_t type, hsize_t chunk, const std::string& path) {
  const hsize_t initial = 0;
  const hsize_t unlimited = H5S_UNLIMITED;
  Hid space = checked(H5Screate_simple(1, &initial, &unlimited), H5Sclose, path, "create a dataspace");
  Hid properties = checked(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, path, "create dataset properties");
  check(H5Pset_chunk(properties.get(), 1, &chunk), path, "set the chunk size");
  check(H5Pset_shuffle(properties.get()), path, "enable the shuffle filter");
  check(H5Pset_deflate(properties.get(), 4), path, "enable deflate");
  return checked(H5Dcreate2(file, name, type, space.get(), H5P_DEFAULT, properties.get(), H5P_DEFAULT), H5Dclose, path,
                 "create a dataset");
}

void append_to(hid_t dataset, hid_t type, const void* data, hsize_t count, hsize_t old_size, const std::string& path) {
  if (count == 0) return;
  const hsize_t new_size = old_size + count;
  check(H5Dset_extent(dataset, &new_size), path, "extend a dataset");
  Hid file_space = checked(H5Dget_space(dataset), H5Sclose, path, "get a dataspace");
  check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &old_size, nullptr, &count, nullptr), path, "select");
  Hid memory_space = checked(H5Screate_simple(1, &count, nullptr), H5Sclose, path, "create a dataspace");
  check(H5Dwrite(dataset, type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), path, "write");
}

void read_from(hid_t dataset, hid_t type, void* data, hsize_t begin, hsize_t count, const std::string& path) {
  if (count == 0) return;
  Hid file_space = checked(H5Dget_space(dataset), H5Sclose, path, "get a dataspace");
  check(H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &begin, nullptr, &count, nullptr), path, "select");
  Hid memory_space = checked(H5Screate_simple(1, &count, nullptr), H5Sclose, path, "create a dataspace");
  check(H5Dread(dataset, type, memory_space.get(), file_space.get(), H5P_DEFAULT, data), path, "read");
}

hsize_t dataset_length(hid_t dataset, const std::string& path) {
  Hid space = checked(H5Dget_space(dataset), H5Sclose, path, "get a dataspace");
  QFT_CHECK(H5Sget_simple_extent_ndims(space.get()) == 1, "{}: token cache datasets must be 1-D", path);
  hsize_t length = 0;
  H5Sget_simple_extent_dims(space.get(), &length, nullptr);
  return length;
}

}  // namespace

struct TokenCacheWriter::Handles {
  Hid file, ids, targets;
};

struct TokenCacheReader::Handles {
  Hid file, ids, targets, offsets;
};

TokenCacheWriter::TokenCacheWriter(std::string path) : path_(std::move(path)), handles_(std::make_unique<Handles>()) {
  silence_hdf5_errors();
  const std::string temporary = path_ + ".tmp";
  const auto parent = std::filesystem::path(path_).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    QFT_CHECK(!ec, "{}: cannot create the cache directory ({})", parent.string(), ec.message());
  }
  handles_->file = checked(H5Fcreate(temporary.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose, temporary,
                           "create the file");
  handles_->ids = create_extensible(handles_->file.get(), "input_ids", H5T_STD_I32LE, kTokenChunk, temporary);
  handles_->targets = create_extensible(handles_->file.get(), "target_mask", H5T_STD_U8LE, kTokenChunk, temporary);
}

TokenCacheWriter::~TokenCacheWriter() {
  if (!finished_) {
    handles_.reset();
    std::remove((path_ + ".tmp").c_str());
  }
}

void TokenCacheWriter::append(const TokenizedSample& sample) {
  QFT_CHECK(!finished_, "{}: append after finish", path_);
  QFT_CHECK(sample.ids.size() == sample.targets.size(), "token cache: sample with {} ids but {} target flags",
            sample.ids.size(), sample.targets.size());
  pending_ids_.insert(pending_ids_.end(), sample.ids.begin(), sample.ids.end());
  pending_targets_.insert(pending_targets_.end(), sample.targets.begin(), sample.targets.end());
  offsets_.push_back(offsets_.back() + static_cast<int64_t>(sample.ids.size()));
  if (pending_ids_.size() >= kFlushTokens) flush();
}

void TokenCacheWriter::flush() {
  const std::string temporary = path_ + ".tmp";
  const auto count = static_cast<hsize_t>(pending_ids_.size());
  append_to(handles_->ids.get(), H5T_NATIVE_INT32, pending_ids_.data(), count, static_cast<hsize_t>(tokens_on_disk_), temporary);
  append_to(handles_->targets.get(), H5T_NATIVE_UINT8, pending_targets_.data(), count, static_cast<hsize_t>(tokens_on_disk_), temporary);
  tokens_on_disk_ += static_cast<int64_t>(count);
  pending_ids_.clear();
  pending_targets_.clear();
}

void TokenCacheWriter::finish(const std::string& metadata_json) {
  QFT_CHECK(!finished_, "{}: finish called twice", path_);
  const std::string temporary = path_ + ".tmp";
  flush();
  Hid offsets = create_extensible(handles_->file.get(), "sample_offsets", H5T_STD_I64LE, kOffsetChunk, temporary);
  append_to(offsets.get(), H5T_NATIVE_INT64, offsets_.data(), static_cast<hsize_t>(offsets_.size()), 0, temporary);
  offsets.reset();

  Hid string_type = checked(H5Tcopy(H5T_C_S1), H5Tclose, temporary, "create a string type");
  check(H5Tset_size(string_type.get(), metadata_json.size() + 1), temporary, "size a string type");
  check(H5Tset_cset(string_type.get(), H5T_CSET_UTF8), temporary, "set UTF-8");
  Hid scalar = checked(H5Screate(H5S_SCALAR), H5Sclose, temporary, "create a dataspace");
  Hid attribute = checked(H5Acreate2(handles_->file.get(), kMetadataAttribute, string_type.get(), scalar.get(), H5P_DEFAULT, H5P_DEFAULT),
                          H5Aclose, temporary, "create the metadata attribute");
  check(H5Awrite(attribute.get(), string_type.get(), metadata_json.c_str()), temporary, "write the metadata attribute");
  attribute.reset();
  handles_.reset();  // closes the file before the rename
  std::error_code ec;
  std::filesystem::rename(temporary, path_, ec);
  QFT_CHECK(!ec, "{}: cannot rename {} into place ({})", path_, temporary, ec.message());
  finished_ = true;
}

TokenCacheReader::TokenCacheReader(const std::string& path) : path_(path), handles_(std::make_unique<Handles>()) {
  silence_hdf5_errors();
  std::error_code ec;
  QFT_CHECK(std::filesystem::exists(path, ec), "token cache '{}' does not exist (run `qft-dist prepare CONFIG.yaml`)", path);
  handles_->file = checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, path, "open the file as HDF5");
  handles_->ids = checked(H5Dopen2(handles_->file.get(), "input_ids", H5P_DEFAULT), H5Dclose, path, "open /input_ids");
  handles_->targets = checked(H5Dopen2(handles_->file.get(), "target_mask", H5P_DEFAULT), H5Dclose, path, "open /target_mask");
  handles_->offsets = checked(H5Dopen2(handles_->file.get(), "sample_offsets", H5P_DEFAULT), H5Dclose, path, "open /sample_offsets");
  const hsize_t offsets = dataset_length(handles_->offsets.get(), path);
  QFT_CHECK(offsets >= 1, "{}: /sample_offsets is empty", path);
  num_samples_ = static_cast<int64_t>(offsets) - 1;
  QFT_CHECK(dataset_length(handles_->ids.get(), path) == dataset_length(handles_->targets.get(), path),
            "{}: /input_ids and /target_mask differ in length", path);
  QFT_CHECK(read_offsets(num_samples_, 1)[0] == num_tokens(), "{}: the last sample offset does not match /input_ids", path);
}

TokenCacheReader::TokenCacheReader(TokenCacheReader&&) noexcept = default;
TokenCacheReader& TokenCacheReader::operator=(TokenCacheReader&&) noexcept = default;
TokenCacheReader::~TokenCacheReader() = default;

int64_t TokenCacheReader::num_tokens() const { return static_cast<int64_t>(dataset_length(handles_->ids.get(), path_)); }

std::string TokenCacheReader::metadata_json() const {
  Hid attribute = checked(H5Aopen(handles_->file.get(), kMetadataAttribute, H5P_DEFAULT), H5Aclose, path_,
                          "open the metadata attribute");
  Hid type = checked(H5Aget_type(attribute.get()), H5Tclose, path_, "read the metadata type");
  std::string text(H5Tget_size(type.get()), '\0');
  check(H5Aread(attribute.get(), type.get(), text.data()), path_, "read the metadata attribute");
  text.resize(text.find('\0') == std::string::npos ? text.size() : text.find('\0'));
  return text;
}

nlohmann::ordered_json TokenCacheReader::metadata() const {
  try {
    return json::parse_ordered(metadata_json(), path_);
  } catch (const json::JsonSyntaxError& e) {
    fail("{}: the metadata attribute is not valid JSON ({})", path_, e.reason());
  }
}

std::vector<int64_t> TokenCacheReader::read_offsets(int64_t begin, int64_t count) const {
  std::vector<int64_t> offsets(static_cast<size_t>(count));
  read_from(handles_->offsets.get(), H5T_NATIVE_INT64, offsets.data(), static_cast<hsize_t>(begin), static_cast<hsize_t>(count), path_);
  return offsets;
}

std::vector<int64_t> TokenCacheReader::sample_lengths() const {
  const std::vector<int64_t> offsets = read_offsets(0, num_samples_ + 1);
  std::vector<int64_t> lengths(static_cast<size_t>(num_samples_));
  for (size_t i = 0; i < lengths.size(); ++i) lengths[i] = offsets[i + 1] - offsets[i];
  return lengths;
}

std::vector<TokenizedSample> TokenCacheReader::read(int64_t begin, int64_t end) const {
  QFT_CHECK(0 <= begin && begin <= end && end <= num_samples_, "{}: samples [{}, {}) are outside [0, {})", path_, begin,
            end, num_samples_);
  if (begin == end) return {};
  const std::vector<int64_t> offsets = read_offsets(begin, end - begin + 1);
  // Offsets come from the file: check them before they size buffers or index into them.
  QFT_CHECK(offsets.front() >= 0 && offsets.front() <= offsets.back() && offsets.back() <= num_tokens(),
            "{}: sample offsets of samples [{}, {}) are corrupt ({} .. {})", path_, begin, end, offsets.front(),
            offsets.back());
  const auto first = static_cast<hsize_t>(offsets.front());
  const auto count = static_cast<hsize_t>(offsets.back() - offsets.front());
  std::vector<int32_t> ids(count);
  std::vector<uint8_t> targets(count);
  read_from(handles_->ids.get(), H5T_NATIVE_INT32, ids.data(), first, count, path_);
  read_from(handles_->targets.get(), H5T_NATIVE_UINT8, targets.data(), first, count, path_);
  std::vector<TokenizedSample> samples(static_cast<size_t>(end - begin));
  for (size_t i = 0; i < samples.size(); ++i) {
    const auto from = static_cast<std::ptrdiff_t>(offsets[i] - offsets.front());
    const auto to = static_cast<std::ptrdiff_t>(offsets[i + 1] - offsets.front());
    QFT_CHECK(from <= to && to <= static_cast<std::ptrdiff_t>(count),
              "{}: sample offsets are corrupt at sample {} (not increasing)", path_, begin + static_cast<int64_t>(i));
    samples[i].ids.assign(ids.begin() + from, ids.begin() + to);
    samples[i].targets.assign(targets.begin() + from, targets.begin() + to);
  }
  return samples;
}

}  // namespace qft::data
