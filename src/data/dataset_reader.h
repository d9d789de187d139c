// Reads one data file (.jsonl: a record per line; .json: a list of records) into Samples. The format is
// detected from the first record unless given; every unusable record goes to the ProblemLog with its
// file:line, so lenient runs skip it and strict runs stop on it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "data/conversation.h"
#include "data/formats.h"
#include "data/input_problems.h"

namespace qft::data {

struct SourcedSample {
  Sample sample;
  int64_t line = 0;  // 1-based line (.jsonl) or item number (.json)
};

struct DatasetContents {
  std::string path;
  DataFormat format = DataFormat::auto_detect;  // as detected (or given)
  bool json_list = false;                       // .json file: `line` counts list items
  std::vector<SourcedSample> samples;
  int64_t records_seen = 0;

  // "file:12" or "file: item 12", for messages about one sample.
  std::string location(int64_t line) const;
};

DatasetContents read_dataset_file(const std::string& path, DataFormat format, ColumnMap columns, ProblemLog& problems);

// Same, from text already in memory (`name` is used in messages; `json_list` chooses the .json layout).
DatasetContents read_dataset_text(const std::string& name, const std::string& contents, bool json_list,
                                  DataFormat format, ColumnMap columns, ProblemLog& problems);

}  // namespace qft::data
