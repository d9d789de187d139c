#include "data/token_cache.h"

#include <cstdio>
#include <filesystem>

#include <hdf5.h>

#include "core/error.h"
#include "core/hdf5_file.h"
#include "core/json_reader.h"

namespace qft::data {

namespace {

constexpr hsize_t kTokenChunk = 1 << 16;
constexpr hsize_t kOffsetChunk = 1 << 14;
constexpr size_t kFlushTokens = 1 << 20;
constexpr const char* kMetadataAttribute = "qft_metadata";

using hdf5::check;
using hdf5::checked;
using hdf5::dataset_length;
using hdf5::Hid;

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
  hdf5::write_range(dataset, type, data, old_size, count, path);
}

}  // namespace

struct TokenCacheWriter::Handles {
  Hid file, ids, targets;
};

struct TokenCacheReader::Handles {
  Hid file, ids, targets, offsets;
};

TokenCacheWriter::TokenCacheWriter(std::string path) : path_(std::move(path)), handles_(std::make_unique<Handles>()) {
  hdf5::silence_errors();
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

  hdf5::write_string_attribute(handles_->file.get(), kMetadataAttribute, metadata_json, temporary);
  handles_.reset();  // closes the file before the rename
  std::error_code ec;
  std::filesystem::rename(temporary, path_, ec);
  QFT_CHECK(!ec, "{}: cannot rename {} into place ({})", path_, temporary, ec.message());
  finished_ = true;
}

TokenCacheReader::TokenCacheReader(const std::string& path) : path_(path), handles_(std::make_unique<Handles>()) {
  hdf5::silence_errors();
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
  return hdf5::read_string_attribute(handles_->file.get(), kMetadataAttribute, path_);
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
  hdf5::read_range(handles_->offsets.get(), H5T_NATIVE_INT64, offsets.data(), static_cast<hsize_t>(begin), static_cast<hsize_t>(count), path_);
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
  hdf5::read_range(handles_->ids.get(), H5T_NATIVE_INT32, ids.data(), first, count, path_);
  hdf5::read_range(handles_->targets.get(), H5T_NATIVE_UINT8, targets.data(), first, count, path_);
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
