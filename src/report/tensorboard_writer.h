// TensorBoard scalar event files written without TensorFlow or protobuf: the record framing
// (length, masked CRC32C, payload, masked CRC32C) and the handful of Event/Summary protobuf fields a
// scalar needs are encoded by hand (shared/reference formats.md §7). TensorBoard reads the files from
// any directory whose file names contain "tfevents".
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qft::report {

// CRC-32C (Castagnoli), as TFRecord uses it; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::string_view data);
// TFRecord's masked form: ((crc >> 15) | (crc << 17)) + 0xA282EAD8.
uint32_t masked_crc32c(std::string_view data);

// One framed record: uint64 length | masked crc of the length | data | masked crc of data.
std::string tfrecord(std::string_view data);

// Serialized Event messages.
std::string file_version_event(double wall_time);
std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& values);

// Appends scalar events to output_dir/runs/events.out.tfevents.<time>.<host>.<pid>.qft and flushes
// after every step, so a TensorBoard watching the run sees each point as it is written.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& log_dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& values);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace qft::report
