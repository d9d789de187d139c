#include "train/checkpoint.h"

#include <cctype>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "io/safetensors.h"
#include "core/remove_tree.h"
#include "model/shape_string.h"

namespace qft::train {

namespace fs = std::filesystem;

nlohmann::json TrainerState::to_json() const {
  nlohmann::json j = {{"qft_checkpoint_version", kCheckpointVersion},
                      {"global_step", global_step},
                      {"epoch", epoch},
                      {"world_size", world_size},
                      {"config_hash", fmt::format("{:016x}", config_hash)},
                      {"config_fingerprint", config_fingerprint},
                      {"log_history", log_history}};
  if (!loss_scaler.is_null()) j["loss_scaler"] = loss_scaler;
  return j;
}

TrainerState TrainerState::from_json(const nlohmann::json& j, const std::string& source) {
  try {
    const int version = j.at("qft_checkpoint_version").get<int>();
    QFT_CHECK(version == kCheckpointVersion, "{}: checkpoint version {} (this qft reads version {})", source, version,
              kCheckpointVersion);
    TrainerState s;
    s.global_step = j.at("global_step").get<int64_t>();
    s.epoch = j.at("epoch").get<double>();
    s.world_size = j.at("world_size").get<int64_t>();
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

namespace {

// Entry `e` of a full-size flat state tensor.
at::Tensor entry_view(const at::Tensor& state, const FlatParameters::Entry& e) {
  return state.narrow(0, e.range.begin, e.range.size()).view(e.shape);
}

}  // namespace

void save_optimizer_state(const std::string& path, const OptimizerState& state, const FlatParameters& flat,
                          bool with_masters) {
  io::NamedTensors tensors;
  for (size_t i = 0; i < flat.entries().size(); ++i) {
    const FlatParameters::Entry& e = flat.entries()[i];
    tensors.emplace_back(e.name + ".exp_avg", entry_view(state.exp_avg, e).to(at::kCPU).contiguous());
    tensors.emplace_back(e.name + ".exp_avg_sq", entry_view(state.exp_avg_sq, e).to(at::kCPU).contiguous());
    if (with_masters) tensors.emplace_back(e.name + ".master", flat.param(i).to(at::kCPU).contiguous());
  }
  io::save_safetensors(path, tensors, {{"format", "pt"}, {"step", std::to_string(state.step)}});
}

void load_optimizer_state(const std::string& path, OptimizerState& state, FlatParameters& flat, bool with_masters) {
  io::SafetensorsFile file(path);
  const auto step = file.metadata().find("step");
  QFT_CHECK(step != file.metadata().end(), "{}: no \"step\" in the metadata", path);
  size_t expected_tensors = 0;
  for (size_t i = 0; i < flat.entries().size(); ++i) {
    const FlatParameters::Entry& e = flat.entries()[i];
    auto restore = [&](const std::string& name, at::Tensor into) {
      ++expected_tensors;
      QFT_CHECK(file.contains(name), "{}: missing tensor \"{}\" (the checkpoint was written for other parameters)",
                path, name);
      const at::Tensor saved = file.tensor(name);
      QFT_CHECK(saved.sizes() == into.sizes() && saved.scalar_type() == at::kFloat,
                "{}: tensor \"{}\" is {} {}, expected F32 {}", path, name, file.info(name).dtype, model::shape_string(saved.sizes()),
                model::shape_string(into.sizes()));
      into.copy_(saved);
    };
    restore(e.name + ".exp_avg", entry_view(state.exp_avg, e));
    restore(e.name + ".exp_avg_sq", entry_view(state.exp_avg_sq, e));
    if (with_masters) restore(e.name + ".master", flat.param(i));
  }
  QFT_CHECK(file.names().size() == expected_tensors, "{}: {} tensors, expected {} for this model and config", path,
            file.names().size(), expected_tensors);
  int64_t step_count = 0;
  try {
    step_count = std::stoll(step->second);
  } catch (const std::logic_error&) {
    fail("{}: metadata step '{}' is not an integer", path, step->second);
  }
  state.step = step_count;
}

std::string checkpoint_dir_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::is_directory(output_dir)) return {};
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
    const std::string digits = name.substr(11);
    // checkpoint-<step>; other names (and absurdly long numbers) are not ours.
    if (digits.empty() || digits.size() > 18 ||
        !std::all_of(digits.begin(), digits.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
      continue;
    }
    if (!fs::exists(entry.path() / "trainer_state.json")) continue;
    found.emplace_back(std::stoll(digits), entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) remove_tree(all[i]);
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
