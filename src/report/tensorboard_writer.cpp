#include "report/tensorboard_writer.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"

namespace qft::report {

namespace {

std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

void put_fixed32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void put_fixed64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// A length-delimited field (wire type 2).
void put_bytes_field(std::string& out, int field, std::string_view bytes) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, bytes.size());
  out.append(bytes.data(), bytes.size());
}

void put_wall_time(std::string& out, double wall_time) {
  uint64_t bits;
  std::memcpy(&bits, &wall_time, sizeof bits);
  out.push_back(0x09);  // Event.wall_time: field 1, I64
  put_fixed64(out, bits);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t crc32c(std::string_view data) {
  static const std::array<uint32_t, 256> table = make_crc32c_table();
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char byte : data) c = table[(c ^ byte) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t x = crc32c(data);
  return ((x >> 15) | (x << 17)) + 0xA282EAD8u;
}

std::string tfrecord(std::string_view data) {
  std::string header;
  put_fixed64(header, data.size());
  std::string out = header;
  put_fixed32(out, masked_crc32c(header));
  out.append(data.data(), data.size());
  put_fixed32(out, masked_crc32c(data));
  return out;
}

std::string file_version_event(double wall_time) {
  std::string event;
  put_wall_time(event, wall_time);
  put_bytes_field(event, 3, "brain.Event:2");  // Event.file_version
  return event;
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& values) {
  std::string summary;
  for (const auto& [tag, value] : values) {
    std::string v;
    put_bytes_field(v, 1, tag);  // Summary.Value.tag
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    v.push_back(0x15);  // Summary.Value.simple_value: field 2, I32
    put_fixed32(v, bits);
    put_bytes_field(summary, 1, v);  // Summary.value
  }
  std::string event;
  put_wall_time(event, wall_time);
  event.push_back(0x10);  // Event.step: field 2, varint (int64 as two's complement)
  put_varint(event, static_cast<uint64_t>(step));
  put_bytes_field(event, 5, summary);  // Event.summary
  return event;
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(log_dir, ec);
  QFT_CHECK(!ec, "report_to tensorboard: cannot create {}: {}", log_dir, ec.message());
  char host[256] = "localhost";
  gethostname(host, sizeof host - 1);
  const double wall_time = now_seconds();
  path_ = (fs::path(log_dir) / fmt::format("events.out.tfevents.{:010d}.{}.{}.qft", static_cast<int64_t>(wall_time),
                                           host, static_cast<int64_t>(getpid())))
              .string();
  file_ = std::fopen(path_.c_str(), "wb");
  QFT_CHECK(file_ != nullptr, "report_to tensorboard: cannot create {}: {}", path_, std::strerror(errno));
  write_record(file_version_event(wall_time));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_) std::fclose(file_);
}

void TensorBoardWriter::add_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& values) {
  write_record(scalars_event(now_seconds(), step, values));
}

void TensorBoardWriter::write_record(const std::string& event) {
  const std::string record = tfrecord(event);
  const bool ok = std::fwrite(record.data(), 1, record.size(), file_) == record.size() && std::fflush(file_) == 0;
  QFT_CHECK(ok, "report_to tensorboard: cannot write {}: {}", path_, std::strerror(errno));
}

}  // namespace qft::report
