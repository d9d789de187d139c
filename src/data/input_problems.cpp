#include "data/input_problems.h"

#include <spdlog/spdlog.h>

namespace qft::data {

const char* problem_name(Problem problem) {
  switch (problem) {
    case Problem::empty_file: return "empty_file";
    case Problem::malformed_json: return "malformed_json";
    case Problem::invalid_utf8: return "invalid_utf8";
    case Problem::wrong_type: return "wrong_type";
    case Problem::missing_field: return "missing_field";
    case Problem::empty_conversation: return "empty_conversation";
    case Problem::unknown_role: return "unknown_role";
    case Problem::no_assistant_turn: return "no_assistant_turn";
    case Problem::empty_text: return "empty_text";
    case Problem::too_long: return "too_long";
    case Problem::no_target_tokens: return "no_target_tokens";
  }
  return "unknown";
}

void ProblemLog::report(Problem problem, const std::string& location, const std::string& reason) {
  if (strict_) fail("{}: {} ({}; data.strict is true)", location, reason, problem_name(problem));
  Entry& entry = entries_[problem];
  ++entry.count;
  if (entry.first_locations.size() < kLocationsKept) {
    entry.first_locations.push_back(location);
    spdlog::warn("{}: {} (skipped: {})", location, reason, problem_name(problem));
  }
}

int64_t ProblemLog::count(Problem problem) const {
  const auto it = entries_.find(problem);
  return it == entries_.end() ? 0 : it->second.count;
}

int64_t ProblemLog::total() const {
  int64_t sum = 0;
  for (const auto& [problem, entry] : entries_) sum += entry.count;
  return sum;
}

std::string ProblemLog::summary() const {
  std::string out;
  for (const auto& [problem, entry] : entries_) {
    if (!out.empty()) out += "; ";
    out += fmt::format("{}: {} ({}{})", problem_name(problem), entry.count, fmt::join(entry.first_locations, ", "),
                       entry.count > static_cast<int64_t>(entry.first_locations.size()) ? ", ..." : "");
  }
  return out;
}

std::map<std::string, int64_t> ProblemLog::counts_by_name() const {
  std::map<std::string, int64_t> out;
  for (const auto& [problem, entry] : entries_) out[problem_name(problem)] = entry.count;
  return out;
}

}  // namespace qft::data
