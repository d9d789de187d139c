#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"

namespace qft::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100000000;

struct DtypeEntry {
  const char* name;
  int bits;
  at::ScalarType type;  // Undefined where ATen has no equivalent
};

// In the order of the Rust `Dtype` enum: the writer sorts by this order, descending.
const DtypeEntry kDtypes[] = {
    {"BOOL", 8, at::kBool},
    {"F4", 4, at::ScalarType::Undefined},
    {"F6_E2M3", 6, at::ScalarType::Undefined},
    {"F6_E3M2", 6, at::ScalarType::Undefined},
    {"U8", 8, at::kByte},
    {"I8", 8, at::kChar},
    {"F8_E5M2", 8, at::ScalarType::Float8_e5m2},
    {"F8_E4M3", 8, at::ScalarType::Float8_e4m3fn},
    {"F8_E8M0", 8, at::ScalarType::Float8_e8m0fnu},
    {"F8_E4M3FNUZ", 8, at::ScalarType::Float8_e4m3fnuz},
    {"F8_E5M2FNUZ", 8, at::ScalarType::Float8_e5m2fnuz},
    {"I16", 16, at::kShort},
    {"U16", 16, at::ScalarType::UInt16},
    {"F16", 16, at::kHalf},
    {"BF16", 16, at::kBFloat16},
    {"I32", 32, at::kInt},
    {"U32", 32, at::ScalarType::UInt32},
    {"F32", 32, at::kFloat},
    {"C64", 64, at::kComplexFloat},
    {"F64", 64, at::kDouble},
    {"I64", 64, at::kLong},
    {"U64", 64, at::ScalarType::UInt64},
};

const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

int dtype_rank(const std::string& name) {
  for (size_t i = 0; i < std::size(kDtypes); ++i)
    if (name == kDtypes[i].name) return static_cast<int>(i);
  return -1;
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// safetensors forbids duplicate keys; the reader refuses them.
nlohmann::json parse_header_json(const std::string& text, const std::string& path) {
  json::ReadOptions options;
  options.reject_duplicate_keys = true;
  try {
    return json::parse(text, path + " (safetensors header)", options);
  } catch (const json::JsonSyntaxError& e) {
    fail("{}: safetensors header is not valid UTF-8 JSON: {} (header byte {})", path, e.reason(), e.byte());
  }
}

uint64_t json_uint(const nlohmann::json& v, const std::string& path, const std::string& key, const char* field) {
  QFT_CHECK(v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() >= 0),
            "{}: tensor \"{}\": {} must hold non-negative integers, got {}", path, key, field, json::excerpt(v));
  return v.get<uint64_t>();
}

TensorInfo parse_entry(const std::string& key, const nlohmann::json& entry, const std::string& path) {
  QFT_CHECK(entry.is_object(), "{}: tensor \"{}\": expected an object with dtype/shape/data_offsets, got {}",
            path, key, json::excerpt(entry));
  for (const char* field : {"dtype", "shape", "data_offsets"})
    QFT_CHECK(entry.contains(field), "{}: tensor \"{}\": missing \"{}\"", path, key, field);
  TensorInfo info;
  QFT_CHECK(entry["dtype"].is_string(), "{}: tensor \"{}\": dtype must be a string, got {}", path, key,
            json::excerpt(entry["dtype"]));
  info.dtype = entry["dtype"].get<std::string>();
  const DtypeEntry* dtype = find_dtype(info.dtype);
  QFT_CHECK(dtype != nullptr, "{}: tensor \"{}\": unknown dtype \"{}\"", path, key, info.dtype);

  QFT_CHECK(entry["shape"].is_array(), "{}: tensor \"{}\": shape must be an array, got {}", path, key,
            json::excerpt(entry["shape"]));
  uint64_t numel = 1;
  for (const auto& d : entry["shape"]) {
    const uint64_t dim = json_uint(d, path, key, "shape");
    QFT_CHECK(dim <= static_cast<uint64_t>(INT64_MAX) && !__builtin_mul_overflow(numel, dim, &numel),
              "{}: tensor \"{}\": shape {} overflows", path, key, json::excerpt(entry["shape"]));
    info.shape.push_back(static_cast<int64_t>(dim));
  }
  const auto& offsets = entry["data_offsets"];
  QFT_CHECK(offsets.is_array() && offsets.size() == 2,
            "{}: tensor \"{}\": data_offsets must be [begin, end], got {}", path, key, json::excerpt(offsets));
  info.begin = json_uint(offsets[0], path, key, "data_offsets");
  info.end = json_uint(offsets[1], path, key, "data_offsets");
  QFT_CHECK(info.begin <= info.end, "{}: tensor \"{}\": data_offsets [{}, {}] has begin > end", path, key,
            info.begin, info.end);
  uint64_t bits = 0;
  QFT_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype->bits), &bits),
            "{}: tensor \"{}\": size overflows", path, key);
  QFT_CHECK(bits % 8 == 0, "{}: tensor \"{}\": {} elements of {} do not fill whole bytes", path, key, numel,
            info.dtype);
  QFT_CHECK(info.end - info.begin == bits / 8,
            "{}: tensor \"{}\": dtype {} and shape {} need {} bytes but data_offsets [{}, {}] span {}", path, key,
            info.dtype, json::excerpt(entry["shape"]), bits / 8, info.begin, info.end, info.end - info.begin);
  return info;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  return "[" + fmt::format("{}", fmt::join(shape, ", ")) + "]";
}

}  // namespace

bool safetensors_dtype_known(const std::string& dtype) { return find_dtype(dtype) != nullptr; }

at::ScalarType safetensors_to_scalar_type(const std::string& dtype, const std::string& context) {
  const DtypeEntry* d = find_dtype(dtype);
  QFT_CHECK(d != nullptr, "{}: unknown safetensors dtype \"{}\"", context, dtype);
  QFT_CHECK(d->type != at::ScalarType::Undefined, "{}: safetensors dtype {} has no torch equivalent", context,
            dtype);
  return d->type;
}

std::string scalar_type_to_safetensors(at::ScalarType type) {
  for (const auto& d : kDtypes)
    if (d.type == type && type != at::ScalarType::Undefined) return d.name;
  fail("torch dtype {} cannot be stored in safetensors", c10::toString(type));
}

// ---- reader -----------------------------------------------------------------------------------

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr != nullptr) munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), mapping_(std::make_shared<Mapping>()) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  QFT_CHECK(fd >= 0, "{}: cannot open safetensors file ({})", path, std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    fail("{}: cannot stat safetensors file ({})", path, std::strerror(err));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    fail("{}: truncated safetensors file: {} bytes, need at least the 8-byte header length", path, file_size);
  }
  // Private (copy-on-write) so callers may scribble on returned views without touching the file.
  void* addr = mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  QFT_CHECK(addr != MAP_FAILED, "{}: cannot mmap safetensors file ({})", path, std::strerror(map_err));
  mapping_->addr = addr;
  mapping_->size = file_size;
  const auto* bytes = static_cast<const unsigned char*>(addr);

  const uint64_t n = read_u64_le(bytes);
  QFT_CHECK(n <= kMaxHeaderBytes, "{}: safetensors header length {} exceeds the limit of {} bytes", path, n,
            kMaxHeaderBytes);
  QFT_CHECK(8 + n <= file_size,
            "{}: truncated safetensors file: header length {} needs {} bytes but the file has {}", path, n, 8 + n,
            file_size);
  QFT_CHECK(n >= 1 && bytes[8] == '{', "{}: safetensors header must be a JSON object starting with '{{'", path);
  const std::string text(reinterpret_cast<const char*>(bytes + 8), n);
  const nlohmann::json header = parse_header_json(text, path);
  QFT_CHECK(header.is_object(), "{}: safetensors header must be a JSON object", path);
  data_start_ = 8 + n;
  const uint64_t buffer_size = file_size - data_start_;

  for (const auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      QFT_CHECK(value.is_object(), "{}: __metadata__ must be an object of strings, got {}", path, json::excerpt(value));
      for (const auto& [mk, mv] : value.items()) {
        QFT_CHECK(mv.is_string(), "{}: __metadata__ \"{}\" must be a string, got {}", path, mk, json::excerpt(mv));
        metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    infos_.emplace(key, parse_entry(key, value, path));
  }

  // Offsets must tile the buffer exactly: sorted by begin, each starts where the previous ended.
  std::vector<std::pair<std::string, const TensorInfo*>> order;
  for (const auto& [key, info] : infos_) order.emplace_back(key, &info);
  std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin
                                              : a.second->end < b.second->end;
  });
  uint64_t expected = 0;
  std::string previous = "(start of buffer)";
  for (const auto& [key, info] : order) {
    QFT_CHECK(info->begin >= expected,
              "{}: tensor \"{}\" data_offsets [{}, {}] overlap the previous tensor \"{}\" which ends at {}", path,
              key, info->begin, info->end, previous, expected);
    QFT_CHECK(info->begin == expected,
              "{}: hole in the data buffer: tensor \"{}\" starts at {} but \"{}\" ends at {}", path, key,
              info->begin, previous, expected);
    QFT_CHECK(info->end <= buffer_size,
              "{}: tensor \"{}\" data_offsets [{}, {}] end beyond the data buffer of {} bytes", path, key,
              info->begin, info->end, buffer_size);
    expected = info->end;
    previous = key;
    names_.push_back(key);
  }
  QFT_CHECK(expected == buffer_size,
            "{}: data buffer is {} bytes but the tensors cover {} (8 + header {} + buffer must equal the file size)",
            path, buffer_size, expected, n);
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = infos_.find(name);
  QFT_CHECK(it != infos_.end(), "{}: no tensor \"{}\"", path_, name);
  return it->second;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const at::ScalarType type = safetensors_to_scalar_type(ti.dtype, fmt::format("{}: tensor \"{}\"", path_, name));
  auto* data = static_cast<char*>(mapping_->addr) + data_start_ + ti.begin;
  const auto options = at::TensorOptions().dtype(type).device(at::kCPU);
  if (ti.begin == ti.end) return at::empty(ti.shape, options);
  std::shared_ptr<Mapping> keep = mapping_;
  at::Tensor view = at::from_blob(data, ti.shape, [keep](void*) mutable { keep.reset(); }, options);
  // Vectorised CPU kernels may assume natural alignment; a header whose length is not a multiple of
  // the element size leaves the data misaligned, so such tensors are copied.
  if (reinterpret_cast<uintptr_t>(data) % at::elementSize(type) != 0) return view.clone();
  return view;
}

// ---- writer -----------------------------------------------------------------------------------

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  struct Item {
    std::string name;
    std::string dtype;
    const at::Tensor* tensor;
  };
  std::vector<Item> items;
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    QFT_CHECK(t.defined(), "{}: tensor \"{}\" is undefined", path, name);
    QFT_CHECK(name != "__metadata__", "{}: \"__metadata__\" cannot be a tensor name", path);
    QFT_CHECK(seen.insert(name).second, "{}: duplicate tensor name \"{}\"", path, name);
    items.push_back({name, scalar_type_to_safetensors(t.scalar_type()), &t});
  }
  // The reference writer's order: dtype descending, then name.
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    const int ra = dtype_rank(a.dtype), rb = dtype_rank(b.dtype);
    return ra != rb ? ra > rb : a.name < b.name;
  });

  std::string header = "{";
  if (!metadata.empty()) header += "\"__metadata__\":" + nlohmann::json(metadata).dump();
  uint64_t offset = 0;
  for (const auto& item : items) {
    const uint64_t nbytes = item.tensor->numel() * item.tensor->element_size();
    if (header.size() > 1) header += ",";
    header += nlohmann::json(item.name).dump() + ":{\"dtype\":\"" + item.dtype + "\",\"shape\":" +
              nlohmann::json(item.tensor->sizes().vec()).dump() + ",\"data_offsets\":[" + std::to_string(offset) +
              "," + std::to_string(offset + nbytes) + "]}";
    offset += nbytes;
  }
  header += "}";
  // Padding to a multiple of 8 keeps the data 8-byte aligned in the file (and in our mapping).
  while (header.size() % 8 != 0) header += ' ';

  // Streamed one tensor at a time, so a model never needs a second full copy in host memory.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    QFT_CHECK(out.good(), "{}: cannot create file ({})", tmp, std::strerror(errno));
    unsigned char len[8];
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>((n >> (8 * i)) & 0xff);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const auto& item : items) {
      const at::Tensor cpu = item.tensor->detach().to(at::kCPU).contiguous();
      out.write(static_cast<const char*>(cpu.data_ptr()), static_cast<std::streamsize>(cpu.nbytes()));
    }
    out.flush();
    QFT_CHECK(out.good(), "{}: write failed ({})", tmp, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  QFT_CHECK(!ec, "{}: cannot rename {} into place ({})", path, tmp, ec.message());
}

// ---- sharded checkpoints --------------------------------------------------------------------------

bool SafetensorsCheckpoint::exists(const std::string& dir) {
  return file_exists(dir + "/model.safetensors.index.json") || file_exists(dir + "/model.safetensors");
}

SafetensorsCheckpoint::SafetensorsCheckpoint(const std::string& dir) : dir_(dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  const std::string single_path = dir + "/model.safetensors";
  if (file_exists(index_path)) {
    source_ = index_path;
    const nlohmann::json index = json::parse_file(index_path);
    QFT_CHECK(index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
              "{}: expected an object with a \"weight_map\" object", index_path);
    std::map<std::string, const SafetensorsFile*> by_file;
    for (const auto& [name, file] : index["weight_map"].items()) {
      QFT_CHECK(file.is_string(), "{}: weight_map[\"{}\"] must be a file name, got {}", index_path, name, json::excerpt(file));
      const std::string file_name = file.get<std::string>();
      QFT_CHECK(file_name.find('/') == std::string::npos && file_name != ".." && !file_name.empty(),
                "{}: weight_map[\"{}\"] = \"{}\" must be a file name inside the directory", index_path, name,
                file_name);
      auto it = by_file.find(file_name);
      if (it == by_file.end()) {
        files_.push_back(std::make_unique<SafetensorsFile>(dir + "/" + file_name));
        it = by_file.emplace(file_name, files_.back().get()).first;
      }
      QFT_CHECK(it->second->contains(name), "{}: weight_map puts \"{}\" in {}, which has no such tensor",
                index_path, name, it->second->path());
      where_[name] = it->second;
    }
  } else {
    QFT_CHECK(file_exists(single_path), "{}: no model.safetensors or model.safetensors.index.json", dir);
    source_ = single_path;
    files_.push_back(std::make_unique<SafetensorsFile>(single_path));
    for (const auto& name : files_.back()->names()) where_[name] = files_.back().get();
  }
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  QFT_CHECK(it != where_.end(), "{}: no tensor \"{}\"", source_, name);
  return *it->second;
}

std::vector<std::string> save_safetensors_sharded(const std::string& dir, const NamedTensors& tensors,
                                                  uint64_t max_shard_bytes, const std::string& prefix,
                                                  const std::map<std::string, std::string>& metadata) {
  ShardedSafetensorsWriter writer(dir, max_shard_bytes, prefix, metadata);
  for (const auto& [name, tensor] : tensors) writer.add(name, tensor);
  return writer.finish();
}

ShardedSafetensorsWriter::ShardedSafetensorsWriter(std::string dir, uint64_t max_shard_bytes, std::string prefix,
                                                   std::map<std::string, std::string> metadata)
    : dir_(std::move(dir)), max_shard_bytes_(max_shard_bytes), prefix_(std::move(prefix)), metadata_(std::move(metadata)) {
  QFT_CHECK(max_shard_bytes_ > 0, "{}: max shard size must be positive", dir_);
  std::filesystem::create_directories(dir_);
}

std::string ShardedSafetensorsWriter::part_name(size_t index) const {
  return fmt::format(".{}-{:05d}.safetensors.part", prefix_, index + 1);
}

void ShardedSafetensorsWriter::add(const std::string& name, const at::Tensor& tensor) {
  QFT_CHECK(tensor.defined(), "{}: tensor \"{}\" is undefined", dir_, name);
  // Greedy in the order given: a tensor larger than the limit gets a shard of its own.
  const uint64_t nbytes = tensor.nbytes();
  if (pending_bytes_ > 0 && pending_bytes_ + nbytes > max_shard_bytes_) flush_shard();
  pending_.emplace_back(name, tensor);
  pending_bytes_ += nbytes;
  total_bytes_ += nbytes;
}

void ShardedSafetensorsWriter::flush_shard() {
  save_safetensors(dir_ + "/" + part_name(shard_names_.size()), pending_, metadata_);
  std::vector<std::string> names;
  for (const auto& item : pending_) names.push_back(item.first);
  shard_names_.push_back(std::move(names));
  pending_.clear();
  pending_bytes_ = 0;
}

std::vector<std::string> ShardedSafetensorsWriter::finish() {
  // An empty model still gets its (empty) file, as before.
  if (!pending_.empty() || shard_names_.empty()) flush_shard();
  auto rename = [&](size_t index, const std::string& final_name) {
    std::error_code ec;
    std::filesystem::rename(dir_ + "/" + part_name(index), dir_ + "/" + final_name, ec);
    QFT_CHECK(!ec, "{}: cannot rename {} to {} ({})", dir_, part_name(index), final_name, ec.message());
  };
  std::vector<std::string> written;
  if (shard_names_.size() == 1) {
    written.push_back(prefix_ + ".safetensors");
    rename(0, written.back());
    return written;
  }
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t i = 0; i < shard_names_.size(); ++i) {
    const std::string name = fmt::format("{}-{:05d}-of-{:05d}.safetensors", prefix_, i + 1, shard_names_.size());
    rename(i, name);
    for (const auto& tensor_name : shard_names_[i]) weight_map[tensor_name] = name;
    written.push_back(name);
  }
  nlohmann::json index = {{"metadata", {{"total_size", total_bytes_}}}, {"weight_map", weight_map}};
  const std::string index_name = prefix_ + ".safetensors.index.json";
  write_file_atomic(dir_ + "/" + index_name, index.dump(2) + "\n");
  written.push_back(index_name);
  return written;
}

}  // namespace qft::io
