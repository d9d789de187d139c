// Bad input in data files: every way a record can be unusable has a named reason. In strict mode the
// first one stops the run with file:line and the reason; in lenient mode (the default) the record is
// skipped and counted, and the summary names the first few locations of each reason.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"

namespace qft::data {

enum class Problem {
  empty_file,
  malformed_json,
  invalid_utf8,
  wrong_type,
  missing_field,
  empty_conversation,
  unknown_role,
  no_assistant_turn,
  empty_text,
  too_long,           // longer than max_seq_length with truncation: drop
  no_target_tokens,   // nothing left to train on after truncation
};

const char* problem_name(Problem problem);

// Thrown by the record parsers; the file reader adds the location and hands it to the ProblemLog.
class BadRecord : public Error {
 public:
  BadRecord(Problem problem, const std::string& reason) : Error(reason), problem_(problem) {}
  Problem problem() const { return problem_; }

 private:
  Problem problem_;
};

[[noreturn]] inline void bad_record(Problem problem, const std::string& reason) { throw BadRecord(problem, reason); }

class ProblemLog {
 public:
  static constexpr size_t kLocationsKept = 5;

  explicit ProblemLog(bool strict) : strict_(strict) {}

  // `location` is "file:line" (or "file: item N"). Strict: throws qft::Error "location: reason".
  void report(Problem problem, const std::string& location, const std::string& reason);

  int64_t count(Problem problem) const;
  int64_t total() const;
  bool strict() const { return strict_; }
  // "malformed_json: 3 (a.jsonl:4, a.jsonl:9, a.jsonl:12); too_long: 1 (b.jsonl:7)", or "" when clean.
  std::string summary() const;
  // Problem name -> count, for the cache metadata and the prepare report.
  std::map<std::string, int64_t> counts_by_name() const;

 private:
  struct Entry {
    int64_t count = 0;
    std::vector<std::string> first_locations;
  };
  bool strict_;
  std::map<Problem, Entry> entries_;
};

}  // namespace qft::data
