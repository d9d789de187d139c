#include "train/checkpoint.h"

#include <csignal>
#include <cctype>
#include <cstdlib>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "core/hdf5_file.h"
#include "core/remove_tree.h"
#include "model/shape_string.h"

namespace qft::train {

namespace fs = std::filesystem;

nlohmann::json TrainerState::to_json() const {
  nlohmann::json j = {{"qft_checkpoint_version", kCheckpointVersion},
                      {"global_step", global_step},
                      {"epoch", epoch},
                      {"world_size", world_size},
                      {"tensor_parallel_size", tensor_parallel_size},
                      {"data_parallel_size", data_parallel_size},
                      {"zero_stage", zero_stage},
                      {"per_device_train_batch_size", per_device_train_batch_size},
                      {"gradient_accumulation_steps", gradient_accumulation_steps},
                      {"config_hash", fmt::format("{:016x}", config_hash)},
                      {"config_fingerprint", config_fingerprint},
                      {"log_history", log_history}};
  if (!loss_scaler.is_null()) j["loss_scaler"] = loss_scaler;
  return j;
}

TrainerState TrainerState::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    const int version = j.at("qft_checkpoint_version").get<int>();
    QFT_CHECK(version == kCheckpointVersion,
              "{}: checkpoint version {} (this qft reads version {}; version 1 kept the optimizer state in "
              "optimizer.safetensors, which this qft no longer reads)",
              source, version, kCheckpointVersion);
    TrainerState s;
    s.global_step = j.at("global_step").get<int64_t>();
    s.epoch = j.at("epoch").get<double>();
    s.world_size = j.at("world_size").get<int64_t>();
    s.tensor_parallel_size = j.at("tensor_parallel_size").get<int64_t>();
    s.data_parallel_size = j.at("data_parallel_size").get<int64_t>();
    s.zero_stage = j.at("zero_stage").get<int64_t>();
    s.per_device_train_batch_size = j.at("per_device_train_batch_size").get<int64_t>();
    s.gradient_accumulation_steps = j.at("gradient_accumulation_steps").get<int64_t>();
    s.config_hash = std::stoull(j.at("config_hash").get<std::string>(), nullptr, 16);
    s.config_fingerprint = j.at("config_fingerprint");
    s.log_history = j.at("log_history");
    if (j.contains("loss_scaler")) s.loss_scaler = j["loss_scaler"];
    for (const auto& row : s.log_history) row.at("step").get<int64_t>();  // the resume reads every row's step
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a valid trainer_state.json ({})", source, e.what());
  } catch (const std::logic_error& e) {  // std::stoull: invalid_argument, out_of_range
    fail("{}: not a valid trainer_state.json (config_hash: {})", source, e.what());
  }
}

void write_trainer_state(const std::string& dir, const TrainerState& state) {
  write_file_atomic((fs::path(dir) / "trainer_state.json").string(), state.to_json().dump(2) + "\n");
}

TrainerState read_trainer_state(const std::string& dir) {
  const std::string path = (fs::path(dir) / "trainer_state.json").string();
  return TrainerState::from_json(json::parse_file(path), path);
}

nlohmann::json ShardLayout::to_json() const {
  nlohmann::json table = nlohmann::json::array();
  for (const FlatParameters::Entry& e : entries) {
    table.push_back(
        {{"name", e.name}, {"shape", e.shape}, {"range", {e.range.begin, e.range.end}}, {"decay", e.decay}});
  }
  return {{"qft_checkpoint_version", kCheckpointVersion},
          {"world_size", world_size},
          {"tensor_parallel_size", tensor_parallel_size},
          {"tensor_parallel_rank", tensor_parallel_rank},
          {"data_parallel_size", data_parallel_size},
          {"data_parallel_rank", data_parallel_rank},
          {"zero_stage", zero_stage},
          {"step", step},
          {"flat_numel", flat_numel},
          {"owned", {owned.begin, owned.end}},
          {"with_masters", with_masters},
          {"entries", table}};
}

namespace {

parallel::Range range_from_json(const nlohmann::json& j) {
  QFT_CHECK(j.is_array() && j.size() == 2, "a range must be [begin, end], not {}", json::excerpt(j));
  const parallel::Range r{j.at(0).get<int64_t>(), j.at(1).get<int64_t>()};
  QFT_CHECK(r.begin >= 0 && r.begin <= r.end, "range [{}, {}) is not a range", r.begin, r.end);
  return r;
}

}  // namespace

ShardLayout ShardLayout::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    const int version = j.at("qft_checkpoint_version").get<int>();
    QFT_CHECK(version == kCheckpointVersion, "{}: checkpoint version {} (this qft reads version {})", source, version,
              kCheckpointVersion);
    ShardLayout s;
    s.world_size = j.at("world_size").get<int64_t>();
    s.tensor_parallel_size = j.at("tensor_parallel_size").get<int64_t>();
    s.tensor_parallel_rank = j.at("tensor_parallel_rank").get<int64_t>();
    s.data_parallel_size = j.at("data_parallel_size").get<int64_t>();
    s.data_parallel_rank = j.at("data_parallel_rank").get<int64_t>();
    s.zero_stage = j.at("zero_stage").get<int64_t>();
    s.step = j.at("step").get<int64_t>();
    s.flat_numel = j.at("flat_numel").get<int64_t>();
    s.owned = range_from_json(j.at("owned"));
    s.with_masters = j.at("with_masters").get<bool>();
    for (const auto& e : j.at("entries")) {
      FlatParameters::Entry entry;
      entry.name = e.at("name").get<std::string>();
      entry.shape = e.at("shape").get<std::vector<int64_t>>();
      entry.range = range_from_json(e.at("range"));
      entry.decay = e.at("decay").get<bool>();
      int64_t numel = 1;
      for (int64_t d : entry.shape) numel *= d;
      QFT_CHECK(numel == entry.range.size() && entry.range.end <= s.flat_numel,
                "entry \"{}\" of shape {} does not fit its range [{}, {}) of a buffer of {}", entry.name,
                model::shape_string(entry.shape), entry.range.begin, entry.range.end, s.flat_numel);
      s.entries.push_back(std::move(entry));
    }
    QFT_CHECK(s.owned.end <= s.flat_numel, "the owned range ends at {}, beyond the buffer of {}", s.owned.end,
              s.flat_numel);
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not a valid optimizer shard layout ({})", source, e.what());
  } catch (const Error& e) {
    fail("{}: not a valid optimizer shard layout ({})", source, e.what());
  }
}

namespace {

constexpr const char* kLayoutAttribute = "qft_layout";
constexpr const char* kDatasets[] = {"exp_avg", "exp_avg_sq", "master"};

at::Tensor host_copy(const at::Tensor& t, int64_t numel, const std::string& path, const char* name) {
  QFT_CHECK(t.defined() && t.dim() == 1 && t.numel() == numel && t.scalar_type() == at::kFloat,
            "{}: {} must be 1-D fp32 of {} elements", path, name, numel);
  return t.to(at::kCPU).contiguous();
}

void write_dataset(hid_t file, const char* name, const at::Tensor& host, const std::string& path) {
  const hsize_t n = static_cast<hsize_t>(host.numel());
  hdf5::Hid space = hdf5::checked(H5Screate_simple(1, &n, nullptr), H5Sclose, path, "create a dataspace");
  hdf5::Hid dataset = hdf5::checked(H5Dcreate2(file, name, H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT,
                                               H5P_DEFAULT),
                                    H5Dclose, path, "create a dataset");
  if (n > 0) {
    hdf5::check(H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, host.data_ptr<float>()), path,
                "write a dataset");
  }
}

}  // namespace

std::string optimizer_shard_path(int64_t data_parallel_rank, int64_t tensor_parallel_rank) {
  return fmt::format("optimizer/dp{}-tp{}.h5", data_parallel_rank, tensor_parallel_rank);
}

void write_optimizer_shard(const std::string& path, const ShardLayout& layout, const at::Tensor& exp_avg,
                           const at::Tensor& exp_avg_sq, const at::Tensor& masters, bool kill_midway) {
  hdf5::silence_errors();
  const int64_t n = layout.owned.size();
  std::vector<at::Tensor> host = {host_copy(exp_avg, n, path, "exp_avg"), host_copy(exp_avg_sq, n, path, "exp_avg_sq")};
  if (layout.with_masters) host.push_back(host_copy(masters, n, path, "the masters"));
  fs::create_directories(fs::path(path).parent_path());
  hdf5::Hid file = hdf5::checked(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose, path,
                                 "create the file");
  hdf5::write_string_attribute(file.get(), kLayoutAttribute, layout.to_json().dump(), path);
  for (size_t i = 0; i < host.size(); ++i) {
    write_dataset(file.get(), kDatasets[i], host[i], path);
    if (kill_midway) {
      // Fault injection: the shard is half on disk, as when a node dies in the middle of a save.
      H5Fflush(file.get(), H5F_SCOPE_GLOBAL);
      std::raise(SIGKILL);
    }
  }
  hdf5::check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), path, "flush the file");
}

namespace {

struct OpenShard {
  std::string path;
  ShardLayout layout;
  hdf5::Hid file;
  std::map<std::string, size_t> entry_of;  // entry name -> index in layout.entries
};

hdf5::Hid open_dataset(const OpenShard& shard, const char* name) {
  hdf5::Hid dataset = hdf5::checked(H5Dopen2(shard.file.get(), name, H5P_DEFAULT), H5Dclose, shard.path,
                                    fmt::format("open /{} (an incomplete shard?)", name).c_str());
  QFT_CHECK(hdf5::dataset_length(dataset.get(), shard.path) == static_cast<hsize_t>(shard.layout.owned.size()),
            "{}: /{} does not hold the {} elements of the owned range", shard.path, name, shard.layout.owned.size());
  return dataset;
}

}  // namespace

int64_t read_optimizer_shards(const std::string& checkpoint_dir, int64_t tensor_parallel_rank,
                              int64_t tensor_parallel_size, const std::vector<FlatParameters::Entry>& entries,
                              parallel::Range owned, at::Tensor& exp_avg, at::Tensor& exp_avg_sq, at::Tensor& masters) {
  hdf5::silence_errors();
  const fs::path dir = fs::path(checkpoint_dir) / "optimizer";
  QFT_CHECK(fs::is_directory(dir), "{}: no optimizer/ directory (a checkpoint of an older qft, or not a checkpoint)",
            checkpoint_dir);
  std::vector<std::string> paths;
  for (const auto& item : fs::directory_iterator(dir)) {
    if (item.path().extension() == ".h5") paths.push_back(item.path().string());
  }
  std::sort(paths.begin(), paths.end());
  std::vector<OpenShard> shards;
  for (const std::string& path : paths) {
    OpenShard shard;
    shard.path = path;
    shard.file =
        hdf5::checked(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, path, "open the file as HDF5");
    const std::string text = hdf5::read_string_attribute(shard.file.get(), kLayoutAttribute, path);
    nlohmann::json layout_json;
    try {
      layout_json = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: the {} attribute is not JSON ({})", path, kLayoutAttribute, e.what());
    }
    shard.layout = ShardLayout::from_json(layout_json, path);
    QFT_CHECK(shard.layout.tensor_parallel_size == tensor_parallel_size,
              "{}: written with distributed.tensor_parallel_size {}, this run has {}: the optimizer state of one "
              "tensor-parallel size cannot be resharded to another (resume with tensor_parallel_size: {})",
              path, shard.layout.tensor_parallel_size, tensor_parallel_size, shard.layout.tensor_parallel_size);
    if (shard.layout.tensor_parallel_rank != tensor_parallel_rank) continue;
    for (size_t i = 0; i < shard.layout.entries.size(); ++i) shard.entry_of[shard.layout.entries[i].name] = i;
    shards.push_back(std::move(shard));
  }
  QFT_CHECK(!shards.empty(), "{}: no optimizer shard of tensor-parallel rank {}", dir.string(), tensor_parallel_rank);
  const ShardLayout& first = shards.front().layout;
  const size_t expected = first.zero_stage == 0 ? 1 : static_cast<size_t>(first.data_parallel_size);
  QFT_CHECK(shards.size() == expected,
            "{}: {} optimizer shards of tensor-parallel rank {}, expected {} (ZeRO stage {}, {} data-parallel ranks): "
            "the checkpoint is incomplete",
            dir.string(), shards.size(), tensor_parallel_rank, expected, first.zero_stage, first.data_parallel_size);
  for (const OpenShard& shard : shards) {
    QFT_CHECK(shard.layout.step == first.step && shard.layout.data_parallel_size == first.data_parallel_size &&
                  shard.layout.zero_stage == first.zero_stage,
              "{} and {} disagree on the step, the data-parallel size or the ZeRO stage", shards.front().path,
              shard.path);
    QFT_CHECK(!masters.defined() || shard.layout.with_masters,
              "{}: no fp32 masters (the checkpoint was written by a LoRA run; this run fine-tunes all weights)",
              shard.path);
    for (const FlatParameters::Entry& e : shard.layout.entries) {
      const bool known = std::any_of(entries.begin(), entries.end(), [&](const auto& n) { return n.name == e.name; });
      QFT_CHECK(known, "{}: state for \"{}\", which this run does not train (the checkpoint was written for other "
                "parameters)", shard.path, e.name);
    }
  }

  struct Target {
    at::Tensor* tensor;
    const char* dataset;
  };
  std::vector<Target> targets = {{&exp_avg, "exp_avg"}, {&exp_avg_sq, "exp_avg_sq"}};
  if (masters.defined()) targets.push_back({&masters, "master"});
  for (const Target& t : targets) {
    QFT_CHECK(t.tensor->device().is_cpu() && t.tensor->is_contiguous() && t.tensor->scalar_type() == at::kFloat &&
                  t.tensor->numel() == owned.size(),
              "read_optimizer_shards: {} must be a contiguous CPU fp32 tensor of {} elements", t.dataset, owned.size());
  }
  std::vector<std::vector<hdf5::Hid>> datasets(shards.size());
  for (size_t s = 0; s < shards.size(); ++s) {
    for (const Target& t : targets) datasets[s].push_back(open_dataset(shards[s], t.dataset));
  }

  for (const FlatParameters::Entry& e : entries) {
    // The part of the entry this rank owns, in the new flat buffer.
    const int64_t begin = std::max(e.range.begin, owned.begin), end = std::min(e.range.end, owned.end);
    if (begin >= end) continue;
    int64_t covered = 0;
    bool found = false;
    for (size_t s = 0; s < shards.size(); ++s) {
      const auto at = shards[s].entry_of.find(e.name);
      if (at == shards[s].entry_of.end()) continue;
      found = true;
      const FlatParameters::Entry& old = shards[s].layout.entries[at->second];
      QFT_CHECK(old.shape == e.shape, "{}: \"{}\" is {} in the checkpoint, {} in this run", shards[s].path, e.name,
                model::shape_string(old.shape), model::shape_string(e.shape));
      // The same elements of the entry in the old flat buffer, cut to what that shard holds.
      const parallel::Range old_owned = shards[s].layout.owned;
      const int64_t old_begin = std::max(old.range.begin + (begin - e.range.begin), old_owned.begin);
      const int64_t old_end = std::min(old.range.begin + (end - e.range.begin), old_owned.end);
      if (old_begin >= old_end) continue;
      const int64_t destination = old_begin - old.range.begin + e.range.begin - owned.begin;
      const auto count = static_cast<hsize_t>(old_end - old_begin);
      for (size_t t = 0; t < targets.size(); ++t) {
        hdf5::read_range(datasets[s][t].get(), H5T_NATIVE_FLOAT, targets[t].tensor->data_ptr<float>() + destination,
                         static_cast<hsize_t>(old_begin - old_owned.begin), count, shards[s].path);
      }
      covered += old_end - old_begin;
    }
    QFT_CHECK(found, "{}: no optimizer state for \"{}\" (the checkpoint was written for other parameters)",
              dir.string(), e.name);
    QFT_CHECK(covered == end - begin, "{}: the shards hold {} of the {} elements of \"{}\" this rank needs: the "
              "checkpoint is incomplete", dir.string(), covered, end - begin, e.name);
  }
  return first.step;
}

std::string checkpoint_dir_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

namespace {

// The step of a "checkpoint-<step>" name; -1 for other names (and absurdly long numbers): not ours.
int64_t checkpoint_step(const std::string& name) {
  if (name.rfind("checkpoint-", 0) != 0) return -1;
  const std::string digits = name.substr(11);
  if (digits.empty() || digits.size() > 18 ||
      !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
    return -1;
  }
  return std::stoll(digits);
}

bool complete_checkpoint(const fs::path& dir) { return fs::exists(dir / "trainer_state.json"); }

// What output_dir/latest names ("" without that file).
std::string latest_name(const std::string& output_dir) {
  const fs::path pointer = fs::path(output_dir) / kLatestFile;
  if (!fs::exists(pointer)) return "";
  std::string name = read_file(pointer.string());
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  return name;
}

}  // namespace

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(output_dir)) return {};
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const int64_t step = checkpoint_step(entry.path().filename().string());
    if (step < 0 || !entry.is_directory() || !complete_checkpoint(entry.path())) continue;
    found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

void remove_interrupted_saves(const std::string& output_dir) {
  if (!fs::is_directory(output_dir)) return;
  std::vector<std::string> stale;
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    const bool temporary = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 &&
                           checkpoint_step(name.substr(0, name.size() - 4)) >= 0;
    if (temporary && entry.is_directory()) stale.push_back(entry.path().string());
  }
  for (const std::string& dir : stale) remove_tree(dir);
}

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const auto all = list_checkpoints(output_dir);
  const std::string latest = latest_name(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
    if (fs::path(all[i]).filename().string() != latest) remove_tree(all[i]);
  }
}

void write_latest(const std::string& output_dir, const std::string& checkpoint_name) {
  write_file_atomic((fs::path(output_dir) / kLatestFile).string(), checkpoint_name + "\n");
}

std::string resolve_latest(const std::string& output_dir, const std::string& source) {
  const std::string name = latest_name(output_dir);
  if (name.empty()) {
    const auto checkpoints = list_checkpoints(output_dir);
    QFT_CHECK(!checkpoints.empty(),
              "{}: training.resume_from_checkpoint is 'latest' but {} has no checkpoint-<step> directory", source,
              output_dir);
    return checkpoints.back();
  }
  const std::string pointer = (fs::path(output_dir) / kLatestFile).string();
  QFT_CHECK(checkpoint_step(name) >= 0, "{}: training.resume_from_checkpoint is 'latest' but {} holds '{}', not a "
            "checkpoint-<step> name", source, pointer, name);
  const fs::path dir = fs::path(output_dir) / name;
  QFT_CHECK(fs::is_directory(dir) && complete_checkpoint(dir),
            "{}: training.resume_from_checkpoint is 'latest' and {} names {}, which does not exist or is not a "
            "complete checkpoint (resume from a checkpoint-<step> directory by path instead)",
            source, pointer, dir.string());
  return dir.string();
}

bool fault_injected(const std::string& point, int rank, int64_t step) {
  const char* value = std::getenv("QFT_FAULT_INJECT");
  if (value == nullptr || *value == '\0') return false;
  const std::string text(value);
  const size_t first = text.find(':');
  const size_t second = first == std::string::npos ? std::string::npos : text.find(':', first + 1);
  const std::string injected_point = text.substr(0, first);
  int64_t injected_rank = -1, injected_step = -1;
  try {
    if (second != std::string::npos) {
      size_t used = 0;
      const std::string rank_text = text.substr(first + 1, second - first - 1), step_text = text.substr(second + 1);
      injected_rank = std::stoll(rank_text, &used);
      if (used != rank_text.size()) injected_rank = -1;
      injected_step = std::stoll(step_text, &used);
      if (used != step_text.size()) injected_step = -1;
    }
  } catch (const std::logic_error&) {
    injected_rank = -1;
  }
  QFT_CHECK(injected_point == "kill-during-save" && injected_rank >= 0 && injected_step >= 1,
            "QFT_FAULT_INJECT='{}': expected kill-during-save:<rank>:<step> (docs/RELIABILITY.md)", text);
  return injected_point == point && injected_rank == rank && injected_step == step;
}

namespace {

void collect_differences(const nlohmann::json& a, const nlohmann::json& b, const std::string& path,
                         std::vector<std::string>& out) {
  if (a.is_object() && b.is_object()) {
    for (const auto& item : a.items()) {
      const std::string key = path.empty() ? item.key() : path + "." + item.key();
      if (!b.contains(item.key())) out.push_back(fmt::format("{}: {} vs (absent)", key, json::excerpt(item.value())));
      else collect_differences(item.value(), b.at(item.key()), key, out);
    }
    for (const auto& item : b.items()) {
      if (!a.contains(item.key()))
        out.push_back(fmt::format("{}: (absent) vs {}", path.empty() ? item.key() : path + "." + item.key(),
                                  json::excerpt(item.value())));
    }
    return;
  }
  if (a != b) out.push_back(fmt::format("{}: {} vs {}", path, json::excerpt(a), json::excerpt(b)));
}

}  // namespace

std::vector<std::string> fingerprint_differences(const nlohmann::json& saved, const nlohmann::json& current) {
  std::vector<std::string> out;
  collect_differences(saved, current, "", out);
  return out;
}

}  // namespace qft::train
