// safetensors reading (memory-mapped, validated as strictly as the reference Rust implementation) and
// writing (Hugging Face layout, atomic), plus sharded checkpoints with model.safetensors.index.json.
// Tensors returned by the reader view the mapping; they keep it alive themselves.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace qft::io {

struct TensorInfo {
  std::string dtype;           // safetensors dtype string, e.g. "BF16"
  std::vector<int64_t> shape;  // [] is a scalar
  uint64_t begin = 0;          // byte offsets relative to the data buffer, end exclusive
  uint64_t end = 0;
};

// safetensors dtype string <-> ATen. F4/F6 exist in the format but have no ATen type: the reader
// validates them, and tensor() refuses them.
bool safetensors_dtype_known(const std::string& dtype);
at::ScalarType safetensors_to_scalar_type(const std::string& dtype, const std::string& context);
std::string scalar_type_to_safetensors(at::ScalarType type);

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws qft::Error naming the file (and the tensor) on any problem.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return path_; }
  // Tensor names in data (offset) order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor viewing the mapping (copy-on-write private mapping: writing into it never touches
  // the file). It stays valid after this object is gone. Clone or convert when ownership matters.
  at::Tensor tensor(const std::string& name) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;
  std::map<std::string, TensorInfo> infos_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device/dtype with a safetensors name; made contiguous on CPU) to `path`
// atomically. Metadata defaults to {"format": "pt"} as transformers/PEFT write it.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// A model directory: `<dir>/model.safetensors`, or the shards listed in
// `<dir>/model.safetensors.index.json` ("weight_map").
class SafetensorsCheckpoint {
 public:
  explicit SafetensorsCheckpoint(const std::string& dir);
  // True when `dir` holds either layout.
  static bool exists(const std::string& dir);

  const std::string& dir() const { return dir_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  // The file holding `name` (a full path); throws naming the checkpoint when absent.
  const SafetensorsFile& file_of(const std::string& name) const;
  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
  at::Tensor tensor(const std::string& name) const { return file_of(name).tensor(name); }
  // Where the names come from, for error messages: the index file or the single file.
  const std::string& source() const { return source_; }

 private:
  std::string dir_;
  std::string source_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

// Writes `tensors` into `dir` as shards of at most `max_shard_bytes` each (a tensor larger than the
// limit gets a shard of its own), named `<prefix>-00001-of-00003.safetensors`, plus
// `<prefix>.safetensors.index.json`; a single shard is written as `<prefix>.safetensors` with no
// index, as huggingface_hub does. Returns the file names written (without dir).
std::vector<std::string> save_safetensors_sharded(const std::string& dir, const NamedTensors& tensors,
                                                  uint64_t max_shard_bytes = 5000000000ULL,
                                                  const std::string& prefix = "model",
                                                  const std::map<std::string, std::string>& metadata = {
                                                      {"format", "pt"}});

// The same files as save_safetensors_sharded, from tensors given one at a time: a shard is written as
// soon as the next tensor would overflow it, so only one shard's tensors are held at once (init-model
// --save-4bit streams a model that never exists whole). Shards carry temporary names until finish()
// knows how many there are; a writer dropped before finish() leaves them behind in `dir`, which callers
// write through a temporary directory (hf::write_directory_atomically).
class ShardedSafetensorsWriter {
 public:
  ShardedSafetensorsWriter(std::string dir, uint64_t max_shard_bytes = 5000000000ULL, std::string prefix = "model",
                           std::map<std::string, std::string> metadata = {{"format", "pt"}});
  void add(const std::string& name, const at::Tensor& tensor);
  // Writes the last shard, renames the shards to their final names and writes the index; returns the
  // file names written (without dir).
  std::vector<std::string> finish();

 private:
  void flush_shard();
  std::string part_name(size_t index) const;

  std::string dir_;
  uint64_t max_shard_bytes_;
  std::string prefix_;
  std::map<std::string, std::string> metadata_;
  NamedTensors pending_;  // the shard being filled
  uint64_t pending_bytes_ = 0;
  uint64_t total_bytes_ = 0;
  std::vector<std::vector<std::string>> shard_names_;  // tensor names of each shard written
};

}  // namespace qft::io
