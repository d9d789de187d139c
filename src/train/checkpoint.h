// Checkpoints for exact resume. output_dir/checkpoint-<step>/ holds
//   adapter_model.safetensors + adapter_config.json (LoRA, gathered from the tensor-parallel shards: the
//       fp32 masters themselves) or a Hugging Face model directory (full fine-tuning, in the stored dtype);
//   optimizer/dp<d>-tp<t>.h5, one HDF5 file per rank that owns optimizer state (every rank under ZeRO >= 1,
//       data-parallel rank 0 of each tensor-parallel coordinate under ZeRO 0): AdamW's m and v of the
//       rank's owned range of the flat buffer (and, for full fine-tuning, the fp32 masters of that range),
//       with the layout in a JSON attribute (ShardLayout: the flat buffer's entry table, the owned range,
//       the grid, the ZeRO stage, the optimizer step). No rank ever holds more state than it owns.
//   trainer_state.json: step, epoch, config fingerprint, grid, batch shape, log history.
// The data order, dropout masks and learning rate are pure functions of (seed, step), so no RNG state is
// needed. Every rank writes into checkpoint-<step>.tmp; rank 0 renames it into place once all finished,
// then moves output_dir/latest (a text file naming the directory). A kill at any moment leaves the
// previous checkpoint and `latest` as they were; the next save removes the stale .tmp directory.
//
// Resume reshards: each rank reads, entry by entry (matched by name, so padding and order do not matter),
// the parts of its new owned range from whichever old shards hold them. Another data-parallel size or
// ZeRO stage therefore resumes; another tensor-parallel size is refused (the shards hold other slices).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "train/flat_parameters.h"

namespace qft::train {

constexpr int kCheckpointVersion = 2;

struct TrainerState {
  int64_t global_step = 0;  // optimizer steps completed
  double epoch = 0.0;
  int64_t world_size = 1;
  int64_t tensor_parallel_size = 1;
  int64_t data_parallel_size = 1;
  int64_t zero_stage = 0;
  // The global batch is per_device_train_batch_size x gradient_accumulation_steps x data_parallel_size.
  int64_t per_device_train_batch_size = 1;
  int64_t gradient_accumulation_steps = 1;
  uint64_t config_hash = 0;
  nlohmann::json config_fingerprint = nlohmann::json::object();
  nlohmann::json log_history = nlohmann::json::array();  // the trainer_log.jsonl rows so far
  // fp16 runs: the dynamic loss scaler's state (LossScaler::to_json); null otherwise. Optional in the
  // file, so checkpoints written before it existed still load.
  nlohmann::json loss_scaler = nullptr;

  nlohmann::json to_json() const;
  static TrainerState from_json(const nlohmann::json& json, const std::string& source);
};

void write_trainer_state(const std::string& dir, const TrainerState& state);
TrainerState read_trainer_state(const std::string& dir);

// Where a rank's optimizer shard lies in the flat buffer, and the grid that wrote it.
struct ShardLayout {
  int64_t world_size = 1;
  int64_t tensor_parallel_size = 1;
  int64_t tensor_parallel_rank = 0;
  int64_t data_parallel_size = 1;
  int64_t data_parallel_rank = 0;
  int64_t zero_stage = 0;
  int64_t step = 0;           // AdamW's step count
  int64_t flat_numel = 0;     // the flat buffer, padding included
  parallel::Range owned;      // the shard: element i of every dataset is flat index owned.begin + i
  bool with_masters = false;  // a "master" dataset beside "exp_avg" and "exp_avg_sq"
  std::vector<FlatParameters::Entry> entries;

  nlohmann::json to_json() const;
  static ShardLayout from_json(const nlohmann::json& json, const std::string& source);
};

// "optimizer/dp<d>-tp<t>.h5", relative to the checkpoint directory.
std::string optimizer_shard_path(int64_t data_parallel_rank, int64_t tensor_parallel_rank);

// Writes one shard: `exp_avg`, `exp_avg_sq` (and `masters` when layout.with_masters), each 1-D fp32 of
// layout.owned.size() elements, on any device. `kill_midway`: the fault-injection point (see
// fault_injected): the process raises SIGKILL on itself after the first dataset reached the file.
void write_optimizer_shard(const std::string& path, const ShardLayout& layout, const at::Tensor& exp_avg,
                           const at::Tensor& exp_avg_sq, const at::Tensor& masters, bool kill_midway = false);

// The state of `owned` (a range of the current flat buffer laid out as `entries`) gathered from the
// shards of tensor-parallel rank `tensor_parallel_rank` in checkpoint_dir/optimizer/, into CPU fp32
// tensors of owned.size() elements. `masters` is read when defined (it keeps its values in the padding).
// Errors name the file and the entry: another tensor-parallel size, missing or extra entries, other
// shapes, shards that do not cover the owned range (an incomplete checkpoint). Returns AdamW's step.
int64_t read_optimizer_shards(const std::string& checkpoint_dir, int64_t tensor_parallel_rank,
                              int64_t tensor_parallel_size, const std::vector<FlatParameters::Entry>& entries,
                              parallel::Range owned, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, at::Tensor& masters);

std::string checkpoint_dir_name(int64_t step);
// Complete checkpoint-<step> directories of `output_dir` (holding a trainer_state.json), oldest first;
// checkpoint-<step>.tmp directories of an interrupted save are not among them.
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// Removes checkpoint-*.tmp directories left by an interrupted save.
void remove_interrupted_saves(const std::string& output_dir);
// Removes the oldest checkpoints beyond `keep` (0 = keep all), never the one output_dir/latest names.
void prune_checkpoints(const std::string& output_dir, int64_t keep);

// output_dir/latest: the name of the newest complete checkpoint directory, replaced atomically.
constexpr const char* kLatestFile = "latest";
void write_latest(const std::string& output_dir, const std::string& checkpoint_name);
// `resume_from_checkpoint: latest`: the directory output_dir/latest names (an error when it names none),
// else, without that file, the newest complete checkpoint (an error when there is none). `source` names
// the config in errors.
std::string resolve_latest(const std::string& output_dir, const std::string& source);

// "a.b: 1 vs 2" for every leaf that differs between two fingerprints.
std::vector<std::string> fingerprint_differences(const nlohmann::json& saved, const nlohmann::json& current);

// QFT_FAULT_INJECT=<point>:<rank>:<step> (docs/RELIABILITY.md): whether rank `rank` must fail at `point`
// of step `step`. An ill-formed value is an error naming the variable.
bool fault_injected(const std::string& point, int rank, int64_t step);

}  // namespace qft::train
