// What a training run shows and leaves behind besides its model files: the progress display (a bar on
// a terminal, plain log lines otherwise), TensorBoard event files (report_to: tensorboard), the
// resolved config (qft_config.yaml), the run summary (run_summary.json and an end-of-run message) and
// the HTML report. The trainer owns one RunRecorder and calls it at three places: after each optimizer
// step, for each row it appends to trainer_log.jsonl, and once at the end (also when a step failed).
// Only rank 0 writes files or prints; the other ranks' recorders do nothing.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace qft::report {

class TensorBoardWriter;

struct RunStart {
  std::string output_dir;
  int rank = 0;
  int world_size = 1;
  int64_t total_steps = 0;
  int64_t start_step = 0;  // > 0 when resuming
  bool tensorboard = false;
  std::string config_yaml;                              // written to output_dir/qft_config.yaml
  nlohmann::json data = nlohmann::json::object();       // data_statistics(...)
  std::string description;                              // "LoRA r=8 alpha=16 on cuda (bf16)"
  // Log rows of the run being resumed, so the report and best loss cover the whole run.
  nlohmann::json previous_rows = nlohmann::json::array();
};

// Rows, tokens, target tokens, min/mean/max length and a length histogram of the training rows.
nlohmann::json data_statistics(const std::vector<int64_t>& row_lengths, const std::vector<int64_t>& row_targets);

// "12.3s", "4m05s", "1h02m03s".
std::string format_duration(double seconds);

// What the progress bar shows.
struct Progress {
  int64_t step = 0;
  int64_t total_steps = 0;
  nlohmann::json last_row;  // the latest logged row (loss, learning_rate, tokens_per_second, peak_memory_bytes)
  double elapsed_seconds = 0;
  double eta_seconds = -1;  // < 0: unknown
};
// One terminal line, e.g. " 45%|#########           | 45/100 loss 1.2345 lr 1.00e-04 812 tok/s mem 1.21 GiB
// 00:37<00:45".
std::string progress_bar_line(const Progress& progress, int bar_width = 24);
// A logged row as one plain line: "step 10/100 | loss 1.2345 | grad_norm ... | elapsed 4.1s | eta 37.0s".
std::string plain_log_line(const nlohmann::json& row, int64_t total_steps, double elapsed_seconds, double eta_seconds);

// The TensorBoard scalars of a logged row, named as transformers' TensorBoardCallback names them:
// eval_x -> eval/x, everything else -> train/x; `step` is the event's step, not a scalar.
std::vector<std::pair<std::string, float>> tensorboard_scalars(const nlohmann::json& row);

class RunRecorder {
 public:
  explicit RunRecorder(RunStart start);
  ~RunRecorder();
  RunRecorder(const RunRecorder&) = delete;
  RunRecorder& operator=(const RunRecorder&) = delete;

  void on_step(int64_t global_step, int64_t input_tokens);
  void on_log(const nlohmann::json& row);
  // `error` empty: the run completed. Otherwise the run failed with that message; the report is still
  // written (a failure while writing it is logged, never thrown, so the original error is what the
  // user sees). Call once.
  void finish(const std::string& error = "");

 private:
  double elapsed() const;
  double eta() const;
  void draw_bar();
  void write_summary(const std::string& status, const std::string& error);

  RunStart start_;
  bool active_ = false;  // rank 0
  bool bar_ = false;     // draw a progress bar (stderr is a terminal)
  bool bar_drawn_ = false;
  bool finished_ = false;
  std::chrono::steady_clock::time_point started_;
  std::string started_at_;
  int64_t step_ = 0;
  int64_t tokens_seen_ = 0;
  nlohmann::json last_row_ = nlohmann::json::object();
  std::unique_ptr<TensorBoardWriter> tensorboard_;
};

}  // namespace qft::report
