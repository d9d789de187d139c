// The self-contained HTML report of a run: loss / eval-loss / learning-rate / gradient-norm / throughput
// / memory curves as inline SVG (no script, no network), the run summary, the data statistics and the
// resolved config. Everything it shows comes from files in the run directory, so `qft-dist plot
// RUN_DIR` redraws it at any time (also while the run is going, or after it failed).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace qft::report {

inline constexpr const char* kLogFileName = "trainer_log.jsonl";
inline constexpr const char* kConfigFileName = "qft_config.yaml";
inline constexpr const char* kSummaryFileName = "run_summary.json";
inline constexpr const char* kReportFileName = "report.html";

struct ReportInput {
  std::string run_dir;
  nlohmann::json rows = nlohmann::json::array();  // trainer_log.jsonl, one object per logged step
  nlohmann::json summary = nlohmann::json::object();  // run_summary.json (status, times, data statistics)
  std::string config_yaml;                          // qft_config.yaml
};

// One point per row that has both `x_key` and `y_key` as numbers.
struct Series {
  std::string name;
  std::string color;
  std::vector<std::pair<double, double>> points;
};

// A line chart with axes, ticks and a legend; `series` with no points are left out of the legend.
std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& series);

std::string render_html_report(const ReportInput& input);

// Reads trainer_log.jsonl; a malformed line is an error naming the file and line.
nlohmann::json read_log_rows(const std::string& path);

// Reads what run_dir holds (trainer_log.jsonl required; qft_config.yaml and run_summary.json when
// present) and writes run_dir/report.html atomically. Returns the report's path.
std::string write_report(const std::string& run_dir);

}  // namespace qft::report
