// Typed, strict access to one YAML mapping of a config file. Every key that is read is marked; after a
// section is read, finish() rejects the keys nobody asked for, with the closest known key as a
// suggestion. Errors carry the file, the line and the full key path ("training.learning_rate").
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace qft {

class ConfigReader {
 public:
  // `node` must be a mapping (or null/absent, treated as empty); `path` is the key path of this section
  // ("" at the top level); `file` names the YAML file in messages.
  ConfigReader(YAML::Node node, std::string file, std::string path = "");

  bool has(const std::string& key) const;

  // Required / optional scalars. Types are checked strictly: "1e-4" is a number, "true" a bool; a
  // float key accepts an integer, an int key rejects 1.5.
  std::string get_string(const std::string& key);
  std::string get_string(const std::string& key, const std::string& fallback);
  int64_t get_int(const std::string& key);
  int64_t get_int(const std::string& key, int64_t fallback);
  double get_double(const std::string& key);
  double get_double(const std::string& key, double fallback);
  bool get_bool(const std::string& key, bool fallback);
  // A list of strings, or a single string (returned as a one-element list).
  std::vector<std::string> get_string_list(const std::string& key, const std::vector<std::string>& fallback);
  // One of `allowed`.
  std::string get_choice(const std::string& key, const std::vector<std::string>& allowed, const std::string& fallback);

  // A nested mapping (empty reader when absent).
  ConfigReader section(const std::string& key);
  // A list of mappings (e.g. data.datasets).
  std::vector<ConfigReader> section_list(const std::string& key);
  // The raw node, marked as read (for values with a custom shape).
  YAML::Node raw(const std::string& key);

  // Throws for every key that was never read: "config.yaml:12: unknown key 'training.learning_rat'
  // (did you mean 'learning_rate'?)". Call once per section after reading it.
  void finish() const;

  // "file:line: key path" prefix for messages about `key`.
  std::string where(const std::string& key) const;
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }

  // Known keys (read so far) — used for suggestions.
  const std::set<std::string>& known_keys() const { return known_; }

 private:
  YAML::Node get_node(const std::string& key);
  // Marks `key` as read; throws "missing required key" when it is absent or null.
  void require(const std::string& key);
  [[noreturn]] void type_error(const std::string& key, const char* expected) const;

  YAML::Node node_;
  std::string file_;
  std::string path_;
  std::set<std::string> known_;
};

// Loads a YAML file; parse errors name the file and line. A key repeated in one mapping is an error
// naming both lines (check_no_duplicate_keys).
YAML::Node load_yaml_file(const std::string& path);
void check_no_duplicate_keys(const YAML::Node& root, const std::string& file);

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);
// The closest candidate within a sensible distance, or "".
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace qft
