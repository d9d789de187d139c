// Data set formats users bring from LLaMA-Factory / TRL / OpenAI: alpaca, ShareGPT, OpenAI `messages`
// and raw `text`. Each record is turned into a Sample; column names can be remapped per data set.
// Problems with a record are thrown as BadRecord with a named reason (see input_problems.h).
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/conversation.h"

namespace qft::data {

enum class DataFormat { auto_detect, alpaca, sharegpt, openai, text };

const char* format_name(DataFormat format);
// "auto", "alpaca", "sharegpt", "openai" (also "messages"), "text"; throws qft::Error otherwise.
DataFormat parse_format_name(const std::string& name);

// Logical field name -> key in the user's records. Logical names per format:
//   alpaca:   instruction, input, output, system, history
//   sharegpt: messages (default "conversations"), role ("from"), content ("value"), system, tools
//   openai:   messages, tools
//   text:     text
class ColumnMap {
 public:
  ColumnMap() = default;
  explicit ColumnMap(std::map<std::string, std::string> overrides) : overrides_(std::move(overrides)) {}

  // The user's key for `logical` in `format`, or the format's default name.
  std::string key(DataFormat format, const std::string& logical) const;
  bool overrides(const std::string& logical) const { return overrides_.count(logical) > 0; }
  void set(const std::string& logical, const std::string& key) { overrides_[logical] = key; }
  const std::map<std::string, std::string>& entries() const { return overrides_; }

  // Throws qft::Error when a logical name does not belong to `format` (typos in the config).
  void validate_for(DataFormat format, const std::string& where) const;

 private:
  std::map<std::string, std::string> overrides_;
};

const std::vector<std::string>& logical_columns(DataFormat format);

// Format of a data set from one of its records; may also set the `messages` column when the list is
// under "conversations" with role/content keys (OpenAI style) or under "messages" with from/value keys.
// Throws BadRecord(wrong_type) when nothing matches.
DataFormat detect_format(const nlohmann::ordered_json& record, ColumnMap& columns);

// One record -> Sample. Throws BadRecord naming the field and the problem.
Sample parse_record(const nlohmann::ordered_json& record, DataFormat format, const ColumnMap& columns);

}  // namespace qft::data
