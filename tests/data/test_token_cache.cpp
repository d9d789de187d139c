// HDF5 token cache: round trip, slices, metadata, and that a failed write leaves no cache behind.
#include <filesystem>

#include <gtest/gtest.h>
#include <hdf5.h>

#include "core/error.h"
#include "core/files.h"
#include "data/packed_dataset.h"
#include "data/token_cache.h"
#include "../text/test_support.h"

namespace qft::data {
namespace {

std::vector<TokenizedSample> some_samples(int n) {
  std::vector<TokenizedSample> samples;
  for (int i = 0; i < n; ++i) {
    TokenizedSample s;
    for (int t = 0; t < 1 + (i * 7) % 13; ++t) {
      s.ids.push_back(i * 100 + t);
      s.targets.push_back(static_cast<uint8_t>((i + t) % 2));
    }
    samples.push_back(s);
  }
  return samples;
}

std::string write_cache(const std::string& dir, const std::vector<TokenizedSample>& samples) {
  const std::string path = dir + "/cache.h5";
  TokenCacheWriter writer(path);
  for (const auto& s : samples) writer.append(s);
  writer.finish(R"({"cache_key": "k", "pad_token_id": 7})");
  return path;
}

TEST(TokenCache, RoundTripAndSlices) {
  const auto samples = some_samples(50);
  const std::string path = write_cache(test::scratch_dir(), samples);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const TokenCacheReader reader(path);
  ASSERT_EQ(reader.num_samples(), 50);
  EXPECT_EQ(reader.metadata_json(), R"({"cache_key": "k", "pad_token_id": 7})");
  const auto lengths = reader.sample_lengths();
  int64_t total = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    EXPECT_EQ(lengths[i], static_cast<int64_t>(samples[i].ids.size()));
    total += lengths[i];
  }
  EXPECT_EQ(reader.num_tokens(), total);
  const auto all = reader.read(0, 50);
  for (size_t i = 0; i < samples.size(); ++i) {
    EXPECT_EQ(all[i].ids, samples[i].ids);
    EXPECT_EQ(all[i].targets, samples[i].targets);
  }
  const auto slice = reader.read(17, 23);
  ASSERT_EQ(slice.size(), 6u);
  EXPECT_EQ(slice[0].ids, samples[17].ids);
  EXPECT_EQ(slice[5].targets, samples[22].targets);
  EXPECT_TRUE(reader.read(5, 5).empty());
  EXPECT_THROW(reader.read(10, 51), Error);
}

TEST(TokenCache, LargeEnoughToSpanSeveralChunksAndFlushes) {
  std::vector<TokenizedSample> samples;
  for (int i = 0; i < 40; ++i) {
    TokenizedSample s;
    s.ids.assign(40000, i);
    s.targets.assign(40000, static_cast<uint8_t>(i % 2));
    samples.push_back(std::move(s));
  }
  const std::string path = write_cache(test::scratch_dir(), samples);
  const TokenCacheReader reader(path);
  EXPECT_EQ(reader.num_tokens(), 40 * 40000);
  const auto middle = reader.read(29, 31);
  EXPECT_EQ(middle[0].ids.front(), 29);
  EXPECT_EQ(middle[1].targets.back(), 0);
}

TEST(TokenCache, UnfinishedWriterLeavesNothing) {
  const std::string dir = test::scratch_dir();
  {
    TokenCacheWriter writer(dir + "/partial.h5");
    writer.append(some_samples(1)[0]);
  }
  EXPECT_FALSE(std::filesystem::exists(dir + "/partial.h5"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/partial.h5.tmp"));
}

TEST(TokenCache, CorruptOffsetsAndMetadataAreClearErrors) {
  const std::string dir = test::scratch_dir();
  const std::string path = write_cache(dir, some_samples(3));
  {
    // An inner offset past the end of the samples read: it must not index outside the read buffer.
    const hid_t file = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(file, 0);
    const hid_t offsets = H5Dopen2(file, "sample_offsets", H5P_DEFAULT);
    ASSERT_GE(offsets, 0);
    const hid_t file_space = H5Dget_space(offsets);
    const hsize_t index = 1, one = 1;
    H5Sselect_hyperslab(file_space, H5S_SELECT_SET, &index, nullptr, &one, nullptr);
    const hid_t memory_space = H5Screate_simple(1, &one, nullptr);
    const int64_t corrupt = 1000000;
    EXPECT_GE(H5Dwrite(offsets, H5T_NATIVE_INT64, memory_space, file_space, H5P_DEFAULT, &corrupt), 0);
    H5Sclose(memory_space);
    H5Sclose(file_space);
    H5Dclose(offsets);
    H5Fclose(file);
  }
  const TokenCacheReader reader(path);
  EXPECT_NE(test::error_of([&] { reader.read(0, 2); }).find(path), std::string::npos);

  TokenCacheWriter writer(dir + "/bad-metadata.h5");
  writer.append(some_samples(1)[0]);
  writer.finish("not json");
  EXPECT_NE(test::error_of([&] { PackedDataset(dir + "/bad-metadata.h5", 20, true); }).find("bad-metadata.h5"),
            std::string::npos);
}

TEST(TokenCache, MissingOrForeignFilesAreClearErrors) {
  const std::string dir = test::scratch_dir();
  EXPECT_THROW(TokenCacheReader(dir + "/none.h5"), Error);
  write_file_atomic(dir + "/not-hdf5.h5", "hello");
  EXPECT_THROW(TokenCacheReader(dir + "/not-hdf5.h5"), Error);
}

TEST(PackedDataset, RowsFromTheCacheMatchRowsBuiltDirectly) {
  const auto samples = some_samples(30);
  const std::string path = write_cache(test::scratch_dir(), samples);
  const PackedDataset dataset(path, 20, true);
  EXPECT_EQ(dataset.pad_token_id(), 7);
  int64_t covered = 0;
  for (int64_t r = 0; r < dataset.num_rows(); ++r) {
    covered += static_cast<int64_t>(dataset.row_samples(r).size());
    EXPECT_LE(dataset.row_tokens(r), 20);
  }
  EXPECT_EQ(covered, 30);
  const auto rows = dataset.read_rows(0, dataset.num_rows());
  for (int64_t r = 0; r < dataset.num_rows(); ++r) {
    std::vector<const TokenizedSample*> members;
    for (const int64_t s : dataset.row_samples(r)) members.push_back(&samples[static_cast<size_t>(s)]);
    const RowData expected = build_row(members);
    EXPECT_EQ(rows[static_cast<size_t>(r)].input_ids, expected.input_ids);
    EXPECT_EQ(rows[static_cast<size_t>(r)].labels, expected.labels);
  }
  const auto picked = dataset.read_rows(std::vector<int64_t>{dataset.num_rows() - 1, 0});
  EXPECT_EQ(picked[1].input_ids, rows[0].input_ids);
}

}  // namespace
}  // namespace qft::data
