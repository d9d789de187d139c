// Checkpoints for exact resume: output_dir/checkpoint-<step>/ holds the trainable weights (a PEFT
// adapter, or for full fine-tuning a model directory), optimizer.safetensors (AdamW m and v per
// parameter, the step count, and fp32 masters when the weights are stored in a lower precision) and
// trainer_state.json (step, epoch, config fingerprint, world size, log history). The data order,
// dropout masks and learning rate are pure functions of (seed, step), so no RNG state is needed.
// Written into checkpoint-<step>.tmp and renamed, so a directory with that name is always complete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/adamw.h"
#include "train/flat_parameters.h"

namespace qft::train {

constexpr int kCheckpointVersion = 1;

struct TrainerState {
  int64_t global_step = 0;  // optimizer steps completed
  double epoch = 0.0;
  int64_t world_size = 1;
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

// `{name}.exp_avg`, `{name}.exp_avg_sq` (+ `{name}.master` when with_masters) and the step count in
// the metadata.
// AdamW's m and v for every element of the flat buffers (gathered from the ZeRO shards), and its step.
struct OptimizerState {
  at::Tensor exp_avg;     // [flat.numel()], fp32
  at::Tensor exp_avg_sq;
  int64_t step = 0;
};

// The state is stored per entry of the flat buffer, so the file does not depend on the buffer's layout,
// the number of ranks or the ZeRO stage: a resume with other ones reshards it.
void save_optimizer_state(const std::string& path, const OptimizerState& state, const FlatParameters& flat,
                          bool with_masters);
// Restores into the registered tensors (same names and shapes, else an error naming the tensor).
// Fills `state` (allocated like flat's buffers) and, with masters, flat's parameters.
void load_optimizer_state(const std::string& path, OptimizerState& state, FlatParameters& flat, bool with_masters);

std::string checkpoint_dir_name(int64_t step);
// checkpoint-<step> directories of `output_dir` holding a trainer_state.json, oldest first.
std::vector<std::string> list_checkpoints(const std::string& output_dir);
// Removes the oldest checkpoints beyond `keep` (0 = keep all).
void prune_checkpoints(const std::string& output_dir, int64_t keep);

// "a.b: 1 vs 2" for every leaf that differs between two fingerprints.
std::vector<std::string> fingerprint_differences(const nlohmann::json& saved, const nlohmann::json& current);

}  // namespace qft::train
