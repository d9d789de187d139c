#include "model/lora_targets.h"

#include <algorithm>
#include <regex>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/config_reader.h"
#include "core/error.h"
#include "core/json_reader.h"

namespace qft::model {

namespace {

bool name_matches(const std::string& module, const std::string& target) {
  if (module == target) return true;
  const std::string suffix = "." + target;
  return module.size() > suffix.size() && module.compare(module.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::regex compile_regex(const std::string& pattern) {
  try {
    return std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    fail("target_modules '{}' is neither a projection name nor a valid regular expression ({})", pattern, e.what());
  }
}

std::vector<std::string> projection_names() {
  std::vector<std::string> out;
  for (const ProjectionInfo& info : projection_table()) out.push_back(info.name);
  return out;
}

// "q_proj, k_proj, ..., down_proj" for messages.
std::string projection_name_list() { return fmt::format("{}", fmt::join(projection_names(), ", ")); }

std::vector<Projection> all_projections() {
  std::vector<Projection> out;
  for (const ProjectionInfo& info : projection_table()) out.push_back(info.projection);
  return out;
}

// Applies `matches(module path)` to every projection of every layer; a projection is targeted when it
// matches in all layers. Mixed layers and patterns matching nothing are errors.
template <typename Matches>
std::vector<Projection> select(const std::string& what, int64_t num_layers, Matches matches) {
  std::vector<Projection> out;
  for (Projection p : all_projections()) {
    int64_t matched_layers = 0;
    for (int64_t layer = 0; layer < num_layers; ++layer) matched_layers += matches(projection_module_path(layer, p)) ? 1 : 0;
    if (matched_layers == 0) continue;
    QFT_CHECK(matched_layers == num_layers,
              "target_modules {} selects {} in {} of {} layers; qft adapts a projection in every layer or in none "
              "(PEFT's layers_to_transform is not supported)",
              what, projection_name(p), matched_layers, num_layers);
    out.push_back(p);
  }
  QFT_CHECK(!out.empty(),
            "target_modules {} matches none of the Qwen3 projections ({}); LoRA on embed_tokens/lm_head is not "
            "supported",
            what, projection_name_list());
  return out;
}

std::vector<Projection> resolve_name_list(const std::vector<std::string>& names, int64_t num_layers) {
  // Every listed name must select something: PEFT errors on a target it cannot find, and a typo here
  // would otherwise train fewer adapters than the user asked for.
  for (const auto& name : names) {
    bool found = false;
    for (Projection p : all_projections()) found = found || name_matches(projection_module_path(0, p), name);
    for (Projection p : all_projections()) found = found || name_matches(projection_module_path(num_layers - 1, p), name);
    QFT_CHECK(found, "target_modules entry '{}' matches no Qwen3 projection ({})", name, projection_name_list());
  }
  return select(fmt::format("[{}]", fmt::join(names, ", ")), num_layers, [&](const std::string& module) {
    return std::any_of(names.begin(), names.end(), [&](const std::string& n) { return name_matches(module, n); });
  });
}

std::vector<Projection> resolve_regex(const std::string& pattern, int64_t num_layers) {
  const std::regex re = compile_regex(pattern);
  return select(fmt::format("regex '{}'", pattern), num_layers,
                [&](const std::string& module) { return std::regex_match(module, re); });
}

bool is_projection_name(const std::string& s) { return projection_from_name(s).has_value(); }

// YAML cannot tell `q_proj` from `[q_proj]`, so a lone entry is a regex only when it looks like one.
bool looks_like_regex(const std::string& s) { return s.find_first_of("*+?()[]{}|^$\\") != std::string::npos; }

}  // namespace

void validate_target_modules_spec(const std::vector<std::string>& spec) {
  QFT_CHECK(!spec.empty(), "target_modules must name at least one module");
  if (spec.size() == 1 && spec[0] == "all-linear") return;
  if (spec.size() == 1 && looks_like_regex(spec[0])) {
    compile_regex(spec[0]);
    return;
  }
  for (const auto& name : spec) {
    QFT_CHECK(name != "all-linear", "'all-linear' must be the whole target_modules value, not a list entry");
    // A list entry matches by module-path suffix, so its last component must name a projection.
    const std::string last = name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
    if (!is_projection_name(last)) {
      const std::string guess = closest_match(last, projection_names());
      fail("target_modules entry '{}' is not a Qwen3 projection ({}){}", name, projection_name_list(),
           guess.empty() ? "" : fmt::format("; did you mean '{}'?", guess));
    }
  }
}

std::vector<Projection> resolve_target_modules(const std::vector<std::string>& spec, int64_t num_layers) {
  validate_target_modules_spec(spec);
  QFT_CHECK(num_layers >= 1, "target_modules: the model has no layers");
  if (spec.size() == 1 && spec[0] == "all-linear") return all_projections();
  if (spec.size() == 1 && looks_like_regex(spec[0])) return resolve_regex(spec[0], num_layers);
  return resolve_name_list(spec, num_layers);
}

std::vector<Projection> resolve_target_modules_json(const nlohmann::json& value, int64_t num_layers,
                                                    const std::string& source) {
  try {
    if (value.is_string()) {
      const std::string s = value.get<std::string>();
      if (s == "all-linear") return all_projections();
      return resolve_regex(s, num_layers);
    }
    QFT_CHECK(value.is_array() && !value.empty(), "expected a list of module names or a regex string, got {}",
              json::excerpt(value));
    std::vector<std::string> names;
    for (const auto& item : value) {
      QFT_CHECK(item.is_string(), "expected module names (strings), got {}", json::excerpt(item));
      names.push_back(item.get<std::string>());
    }
    return resolve_name_list(names, num_layers);
  } catch (const Error& e) {
    fail("{}: 'target_modules': {}", source, e.what());
  }
}

}  // namespace qft::model
