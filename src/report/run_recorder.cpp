#include "report/run_recorder.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/files.h"
#include "report/html_report.h"
#include "report/tensorboard_writer.h"

namespace qft::report {

namespace {

namespace fs = std::filesystem;

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / (1024.0 * 1024.0 * 1024.0)); }

double number_or(const nlohmann::json& row, const char* key, double fallback) {
  return row.contains(key) && row[key].is_number() ? row[key].get<double>() : fallback;
}

// A terminal that can redraw a line: stderr is a TTY and TERM is not "dumb". QFT_PROGRESS=lines or
// =bar overrides the guess (CI logs, screen recordings).
bool use_progress_bar() {
  if (const char* forced = std::getenv("QFT_PROGRESS")) return std::string(forced) == "bar";
  const char* term = std::getenv("TERM");
  return isatty(fileno(stderr)) && !(term && std::string(term) == "dumb");
}

}  // namespace

nlohmann::json data_statistics(const std::vector<int64_t>& row_lengths, const std::vector<int64_t>& row_targets) {
  nlohmann::json stats = nlohmann::json::object();
  stats["rows"] = row_lengths.size();
  int64_t tokens = 0, targets = 0;
  for (int64_t n : row_lengths) tokens += n;
  for (int64_t n : row_targets) targets += n;
  stats["tokens"] = tokens;
  stats["target_tokens"] = targets;
  if (row_lengths.empty()) return stats;
  const auto [min_it, max_it] = std::minmax_element(row_lengths.begin(), row_lengths.end());
  stats["min_length"] = *min_it;
  stats["mean_length"] = static_cast<double>(tokens) / static_cast<double>(row_lengths.size());
  stats["max_length"] = *max_it;
  stats["target_fraction"] = tokens > 0 ? static_cast<double>(targets) / static_cast<double>(tokens) : 0.0;
  // Eight equal-width bins from the shortest to the longest row.
  constexpr int64_t kBins = 8;
  const int64_t lo = *min_it, hi = *max_it;
  const int64_t width = std::max<int64_t>(1, (hi - lo + kBins) / kBins);
  std::vector<int64_t> counts(kBins, 0);
  for (int64_t n : row_lengths) counts[std::min<int64_t>(kBins - 1, (n - lo) / width)] += 1;
  nlohmann::json bins = nlohmann::json::array();
  for (int64_t b = 0; b < kBins; ++b) {
    const int64_t bin_lo = lo + b * width;
    if (bin_lo > hi) break;
    bins.push_back({{"min", bin_lo}, {"max", std::min(hi, bin_lo + width - 1)}, {"rows", counts[b]}});
  }
  stats["length_histogram"] = bins;
  return stats;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0)) return "?";
  const int64_t total = static_cast<int64_t>(std::llround(seconds));
  if (total >= 3600) return fmt::format("{}h{:02d}m{:02d}s", total / 3600, (total / 60) % 60, total % 60);
  if (total >= 60) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{:.1f}s", seconds);
}

std::string progress_bar_line(const Progress& p, int bar_width) {
  const double fraction =
      p.total_steps > 0 ? std::clamp(static_cast<double>(p.step) / static_cast<double>(p.total_steps), 0.0, 1.0) : 0.0;
  const int filled = static_cast<int>(std::floor(fraction * bar_width));
  std::string line = fmt::format("{:3.0f}%|{}{}| {}/{}", 100.0 * fraction, std::string(filled, '#'),
                                 std::string(bar_width - filled, ' '), p.step, p.total_steps);
  const nlohmann::json& row = p.last_row;
  if (row.contains("loss") && row["loss"].is_number()) line += fmt::format(" loss {:.4f}", row["loss"].get<double>());
  if (row.contains("learning_rate") && row["learning_rate"].is_number()) {
    line += fmt::format(" lr {:.2e}", row["learning_rate"].get<double>());
  }
  if (row.contains("tokens_per_second") && row["tokens_per_second"].is_number()) {
    line += fmt::format(" {:.0f} tok/s", row["tokens_per_second"].get<double>());
  }
  if (row.contains("peak_memory_bytes") && row["peak_memory_bytes"].is_number()) {
    line += " mem " + gib(row["peak_memory_bytes"].get<double>());
  }
  line += fmt::format(" {}<{}", format_duration(p.elapsed_seconds), format_duration(p.eta_seconds));
  return line;
}

std::string plain_log_line(const nlohmann::json& row, int64_t total_steps, double elapsed_seconds, double eta_seconds) {
  std::string line = fmt::format("step {}/{}", row.value("step", int64_t{0}), total_steps);
  for (const auto& [key, value] : row.items()) {
    if (key == "step") continue;
    if (key == "peak_memory_bytes" && value.is_number()) {
      line += " | peak_memory " + gib(value.get<double>());
    } else if (key == "learning_rate" && value.is_number()) {
      line += fmt::format(" | learning_rate {:.3e}", value.get<double>());
    } else if (key == "tokens_per_second" && value.is_number()) {
      line += fmt::format(" | {:.0f} tok/s", value.get<double>());
    } else if (key == "epoch" && value.is_number()) {
      line += fmt::format(" | epoch {:.2f}", value.get<double>());
    } else if (value.is_number_float()) {
      line += fmt::format(" | {} {:.4f}", key, value.get<double>());
    } else {
      line += fmt::format(" | {} {}", key, value.is_string() ? value.get<std::string>() : value.dump());
    }
  }
  line += fmt::format(" | elapsed {} | eta {}", format_duration(elapsed_seconds), format_duration(eta_seconds));
  return line;
}

std::vector<std::pair<std::string, float>> tensorboard_scalars(const nlohmann::json& row) {
  std::vector<std::pair<std::string, float>> out;
  for (const auto& [key, value] : row.items()) {
    if (key == "step" || !value.is_number()) continue;
    const std::string tag = key.rfind("eval_", 0) == 0 ? "eval/" + key.substr(5) : "train/" + key;
    out.emplace_back(tag, value.get<float>());
  }
  return out;
}

RunRecorder::RunRecorder(RunStart start)
    : start_(std::move(start)), started_(std::chrono::steady_clock::now()), started_at_(utc_now()) {
  active_ = start_.rank == 0;
  step_ = start_.start_step;
  if (!active_) return;
  bar_ = use_progress_bar();
  const fs::path dir(start_.output_dir);
  if (!start_.config_yaml.empty()) write_file_atomic((dir / kConfigFileName).string(), start_.config_yaml);
  write_summary("running", "");
  if (start_.tensorboard) {
    tensorboard_ = std::make_unique<TensorBoardWriter>((dir / "runs").string());
    spdlog::info("TensorBoard events: {} (tensorboard --logdir {})", tensorboard_->path(), (dir / "runs").string());
  }
}

RunRecorder::~RunRecorder() = default;

double RunRecorder::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
}

double RunRecorder::eta() const {
  const int64_t done = step_ - start_.start_step;
  if (done <= 0) return -1;
  return elapsed() / static_cast<double>(done) * static_cast<double>(start_.total_steps - step_);
}

void RunRecorder::draw_bar() {
  Progress p;
  p.step = step_;
  p.total_steps = start_.total_steps;
  p.last_row = last_row_;
  p.elapsed_seconds = elapsed();
  p.eta_seconds = eta();
  std::string line = progress_bar_line(p);
  // A line longer than the terminal wraps and \r would then redraw only its last part: cut it.
  winsize size{};
  if (ioctl(fileno(stderr), TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && line.size() >= size.ws_col) {
    line.resize(size.ws_col - 1);
  }
  // \r + clear-to-end-of-line redraws in place.
  std::fprintf(stderr, "\r%s\x1b[K", line.c_str());
  std::fflush(stderr);
  bar_drawn_ = true;
}

void RunRecorder::on_step(int64_t global_step, int64_t input_tokens) {
  step_ = global_step;
  tokens_seen_ += input_tokens;
  if (active_ && bar_) draw_bar();
}

void RunRecorder::on_log(const nlohmann::json& row) {
  if (!active_) return;
  last_row_ = row;
  if (tensorboard_) tensorboard_->add_scalars(row.value("step", step_), tensorboard_scalars(row));
  const std::string line = plain_log_line(row, start_.total_steps, elapsed(), eta());
  if (bar_) {
    // The row stays in the terminal's history above the bar, as tqdm does.
    std::fprintf(stderr, "\r\x1b[K");
    spdlog::info("{}", line);
    draw_bar();
  } else {
    spdlog::info("{}", line);
  }
}

void RunRecorder::write_summary(const std::string& status, const std::string& error) {
  nlohmann::json summary;
  summary["status"] = status;
  if (!error.empty()) summary["error"] = error;
  summary["global_step"] = step_;
  summary["total_steps"] = start_.total_steps;
  summary["elapsed_seconds"] = elapsed();
  summary["tokens_seen"] = tokens_seen_;
  summary["started_at"] = started_at_;
  if (status != "running") summary["finished_at"] = utc_now();
  summary["world_size"] = start_.world_size;
  if (!start_.description.empty()) summary["description"] = start_.description;
  nlohmann::json outputs = nlohmann::json::array();
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(start_.output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) continue;
    names.push_back(entry.is_directory() ? name + "/" : name);
  }
  if (status != "running" && std::find(names.begin(), names.end(), kReportFileName) == names.end()) {
    names.push_back(kReportFileName);
  }
  if (std::find(names.begin(), names.end(), kSummaryFileName) == names.end()) names.push_back(kSummaryFileName);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) outputs.push_back(n);
  summary["outputs"] = outputs;
  summary["data"] = start_.data;
  write_file_atomic((fs::path(start_.output_dir) / kSummaryFileName).string(), summary.dump(2) + "\n");
}

void RunRecorder::finish(const std::string& error) {
  if (!active_ || finished_) return;
  finished_ = true;
  if (bar_drawn_) std::fprintf(stderr, "\n");
  const bool failed = !error.empty();
  std::string report;
  try {
    write_summary(failed ? "failed" : "completed", error);
    report = write_report(start_.output_dir);
  } catch (const std::exception& e) {
    if (!failed) throw;
    spdlog::warn("could not write the run report: {}", e.what());
  }

  // Final and best loss of the whole run (resumed rows included).
  nlohmann::json rows = start_.previous_rows;
  try {
    const nlohmann::json logged = read_log_rows((fs::path(start_.output_dir) / kLogFileName).string());
    if (!logged.empty()) rows = logged;
  } catch (const std::exception&) {
  }
  std::string losses;
  double best = INFINITY;
  int64_t best_step = 0;
  for (const auto& row : rows) {
    const double loss = number_or(row, "loss", NAN);
    if (std::isfinite(loss) && loss < best) {
      best = loss;
      best_step = row.value("step", int64_t{0});
    }
  }
  if (std::isfinite(best)) {
    losses = fmt::format("; final loss {:.4f}, best {:.4f} (step {})", number_or(rows.back(), "loss", NAN), best,
                         best_step);
  }
  const double seconds = elapsed();
  const std::string head =
      fmt::format("{} {}/{} steps in {}, {} tokens ({:.0f} tok/s){}", failed ? "run FAILED after" : "run completed:",
                  step_, start_.total_steps, format_duration(seconds), tokens_seen_,
                  seconds > 0 ? static_cast<double>(tokens_seen_) / seconds : 0.0, losses);
  if (failed) {
    spdlog::error("{}", head);
  } else {
    spdlog::info("{}", head);
  }
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(start_.output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    names.push_back(entry.is_directory() ? name + "/" : name);
  }
  std::sort(names.begin(), names.end());
  std::string written;
  for (const auto& n : names) written += (written.empty() ? "" : ", ") + n;
  spdlog::info("written to {}: {}", start_.output_dir, written);
  if (!report.empty()) spdlog::info("report: {}", report);
  if (tensorboard_) spdlog::info("TensorBoard: tensorboard --logdir {}", (fs::path(start_.output_dir) / "runs").string());
}

}  // namespace qft::report
