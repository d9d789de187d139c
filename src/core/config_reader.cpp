#include "core/config_reader.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/config_key_hints.h"
#include "core/error.h"

namespace qft {

namespace {

std::string join_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

bool parse_int(const std::string& s, int64_t& out) {
  if (s.empty()) return false;
  size_t pos = 0;
  try {
    long long v = std::stoll(s, &pos, 10);
    if (pos != s.size()) return false;
    out = v;
    return true;
  } catch (...) {
    return false;
  }
}

bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  std::string lower = s;
  // Through unsigned char: ::tolower of a negative char (any UTF-8 byte) is undefined.
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == ".inf" || lower == "inf") { out = std::numeric_limits<double>::infinity(); return true; }
  if (lower == ".nan" || lower == "nan") { out = std::numeric_limits<double>::quiet_NaN(); return true; }
  if (lower == "-.inf" || lower == "-inf") { out = -std::numeric_limits<double>::infinity(); return true; }
  size_t pos = 0;
  try {
    double v = std::stod(s, &pos);
    if (pos != s.size()) return false;
    out = v;
    return true;
  } catch (const std::out_of_range&) {
    // Beyond the double range ("1e999"): a number, but not a finite one. (Underflow rounds to 0.)
    const bool tiny = lower.find("e-") != std::string::npos;
    out = tiny ? 0.0 : std::numeric_limits<double>::infinity();
    return true;
  } catch (...) {
    return false;
  }
}

// yaml-cpp: operator[] on a non-const node inserts the key, so every lookup goes through a const node.
YAML::Node child(const YAML::Node& map, const std::string& key) {
  if (!map || !map.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  return map[key];
}

}  // namespace

ConfigReader::ConfigReader(YAML::Node node, std::string file, std::string path)
    : node_(node), file_(std::move(file)), path_(std::move(path)) {
  if (node_.IsDefined() && !node_.IsNull() && !node_.IsMap()) {
    const int line = node_.Mark().line >= 0 ? node_.Mark().line + 1 : 0;
    fail("{}:{}: '{}' must be a mapping of keys to values", file_, line, path_.empty() ? "<top level>" : path_);
  }
}

bool ConfigReader::has(const std::string& key) const {
  YAML::Node n = child(node_, key);
  return n.IsDefined() && !n.IsNull();
}

std::string ConfigReader::where(const std::string& key) const {
  int line = 0;
  YAML::Node n = child(node_, key);
  if (n.IsDefined()) line = n.Mark().line + 1;
  else if (node_.IsDefined()) line = node_.Mark().line + 1;
  return fmt::format("{}:{}: '{}'", file_, std::max(line, 1), join_path(path_, key));
}

YAML::Node ConfigReader::get_node(const std::string& key) {
  known_.insert(key);
  YAML::Node n = child(node_, key);
  if (!n.IsDefined() || n.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
  return n;
}

void ConfigReader::require(const std::string& key) {
  known_.insert(key);
  if (has(key)) return;
  fail("{}:{}: missing required key '{}'", file_, node_.IsDefined() ? node_.Mark().line + 1 : 1, join_path(path_, key));
}

void ConfigReader::type_error(const std::string& key, const char* expected) const {
  std::string got;
  YAML::Node n = child(node_, key);
  if (n.IsScalar()) got = "'" + n.Scalar() + "'";
  else if (n.IsSequence()) got = "a list";
  else if (n.IsMap()) got = "a mapping";
  else got = "nothing";
  fail("{}: expected {}, got {}", where(key), expected, got);
}

std::string ConfigReader::get_string(const std::string& key) {
  require(key);
  return get_string(key, "");
}

std::string ConfigReader::get_string(const std::string& key, const std::string& fallback) {
  YAML::Node n = get_node(key);
  if (!n.IsDefined()) return fallback;
  if (!n.IsScalar()) type_error(key, "a string");
  return n.Scalar();
}

int64_t ConfigReader::get_int(const std::string& key) {
  require(key);
  return get_int(key, 0);
}

int64_t ConfigReader::get_int(const std::string& key, int64_t fallback) {
  YAML::Node n = get_node(key);
  if (!n.IsDefined()) return fallback;
  int64_t v = 0;
  if (!n.IsScalar() || !parse_int(n.Scalar(), v)) type_error(key, "an integer");
  return v;
}

double ConfigReader::get_double(const std::string& key) {
  require(key);
  return get_double(key, 0.0);
}

double ConfigReader::get_double(const std::string& key, double fallback) {
  YAML::Node n = get_node(key);
  if (!n.IsDefined()) return fallback;
  double v = 0;
  if (!n.IsScalar() || !parse_double(n.Scalar(), v)) type_error(key, "a number");
  // A NaN or infinite learning rate, ratio or norm never means what the user wanted.
  if (!std::isfinite(v)) type_error(key, "a finite number");
  return v;
}

bool ConfigReader::get_bool(const std::string& key, bool fallback) {
  YAML::Node n = get_node(key);
  if (!n.IsDefined()) return fallback;
  if (!n.IsScalar()) type_error(key, "true or false");
  const std::string& s = n.Scalar();
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  type_error(key, "true or false");
}

std::vector<std::string> ConfigReader::get_string_list(const std::string& key,
                                                       const std::vector<std::string>& fallback) {
  YAML::Node n = get_node(key);
  if (!n.IsDefined()) return fallback;
  if (n.IsScalar()) return {n.Scalar()};
  if (!n.IsSequence()) type_error(key, "a string or a list of strings");
  std::vector<std::string> out;
  for (const auto& item : n) {
    if (!item.IsScalar()) type_error(key, "a list of strings");
    out.push_back(item.Scalar());
  }
  return out;
}

std::string ConfigReader::get_choice(const std::string& key, const std::vector<std::string>& allowed,
                                     const std::string& fallback) {
  const std::string v = get_string(key, fallback);
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return v;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  const std::string guess = closest_match(v, allowed);
  fail("{}: '{}' is not one of {}{}", where(key), v, list,
       guess.empty() ? "" : fmt::format(" (did you mean '{}'?)", guess));
}

ConfigReader ConfigReader::section(const std::string& key) {
  YAML::Node n = get_node(key);
  if (n.IsDefined() && !n.IsMap()) type_error(key, "a mapping");
  return ConfigReader(n, file_, join_path(path_, key));
}

std::vector<ConfigReader> ConfigReader::section_list(const std::string& key) {
  YAML::Node n = get_node(key);
  std::vector<ConfigReader> out;
  if (!n.IsDefined()) return out;
  if (!n.IsSequence()) type_error(key, "a list of mappings");
  for (size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsMap()) type_error(key, "a list of mappings");
    out.emplace_back(n[i], file_, fmt::format("{}[{}]", join_path(path_, key), i));
  }
  return out;
}

YAML::Node ConfigReader::raw(const std::string& key) { return get_node(key); }

void ConfigReader::finish() const {
  if (!node_.IsDefined() || !node_.IsMap()) return;
  std::vector<std::string> candidates(known_.begin(), known_.end());
  for (const auto& kv : node_) {
    // A complex key ("? [a, b]") has no string form: as<std::string>() would throw a YAML exception.
    if (!kv.first.IsScalar()) {
      fail("{}:{}: keys of '{}' must be plain names", file_, kv.first.Mark().line + 1,
           path_.empty() ? "<top level>" : path_);
    }
    const std::string key = kv.first.Scalar();
    if (known_.count(key)) continue;
    const std::string hint = config_key_hint(path_, key);  // keys from other trainers, keys in the wrong section
    if (!hint.empty()) fail("{}:{}: unknown key '{}': {}", file_, kv.first.Mark().line + 1, join_path(path_, key), hint);
    const std::string guess = closest_match(key, candidates);
    fail("{}:{}: unknown key '{}'{}", file_, kv.first.Mark().line + 1, join_path(path_, key),
         guess.empty() ? " (see docs/CONFIG.md for the keys of this section)"
                       : fmt::format(" (did you mean '{}'?)", guess));
  }
}

void check_no_duplicate_keys(const YAML::Node& root, const std::string& file) {
  // yaml-cpp keeps both entries of a repeated key and lookups see only the first: the second value would
  // be ignored without a word. Iterative, and bounded: aliases can make a small file a huge tree.
  constexpr size_t kMaxNodes = 1000000;
  std::vector<YAML::Node> pending{root};
  size_t visited = 0;
  while (!pending.empty()) {
    const YAML::Node node = pending.back();
    pending.pop_back();
    QFT_CHECK(++visited <= kMaxNodes, "{}: the YAML document expands to more than {} nodes (aliases?)", file, kMaxNodes);
    if (node.IsSequence()) {
      for (const auto& item : node) pending.push_back(item);
    } else if (node.IsMap()) {
      std::unordered_map<std::string, int> seen;
      for (const auto& kv : node) {
        if (kv.first.IsScalar()) {
          const std::string& key = kv.first.Scalar();
          const int line = kv.first.Mark().line + 1;
          const auto [it, inserted] = seen.emplace(key, line);
          if (!inserted)
            fail("{}:{}: duplicate key '{}' (also at line {}); YAML would keep only one of the two values", file,
                 line, key, it->second);
        } else {
          pending.push_back(kv.first);
        }
        pending.push_back(kv.second);
      }
    }
  }
}

YAML::Node load_yaml_file(const std::string& path) {
  try {
    YAML::Node root = YAML::LoadFile(path);
    check_no_duplicate_keys(root, path);
    return root;
  } catch (const YAML::BadFile&) {
    fail("{}: cannot open config file", path);
  } catch (const YAML::ParserException& e) {
    fail("{}:{}:{}: YAML syntax error: {}", path, e.mark.line + 1, e.mark.column + 1, e.msg);
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const size_t d = edit_distance(word, c);
    if (d < best_distance) { best_distance = d; best = c; }
  }
  const size_t limit = std::max<size_t>(2, word.size() / 3);
  return best_distance <= limit ? best : "";
}

}  // namespace qft
