// The run report pieces: TensorBoard record bytes (checked against the worked bytes of
// shared/reference formats.md §7, which were verified with TensorBoard's own masked_crc32c), the HTML
// report, the progress display and the RunRecorder's files. The event files are also read back by
// TensorBoard itself in tests/reference/test_run_report.py.
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "core/files.h"
#include "report/html_report.h"
#include "report/run_recorder.h"
#include "report/tensorboard_writer.h"
#include "../text/test_support.h"

namespace qft::report {
namespace {

namespace fs = std::filesystem;
using test::error_of;
using test::scratch_dir;

std::string hex(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += fmt::format("{}{:02x}", out.empty() ? "" : " ", c);
  return out;
}

TEST(TensorBoard, Crc32cCheckValue) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(crc32c(""), 0u);
}

TEST(TensorBoard, FileVersionRecordMatchesReferenceBytes) {
  EXPECT_EQ(hex(tfrecord(file_version_event(1700000000.0))),
            "18 00 00 00 00 00 00 00 a3 7f 4b 22 09 00 00 00 40 fc 54 d9 41 1a 0d 62 72 61 69 6e 2e 45 76 65 6e 74 "
            "3a 32 ec ed 8f 9d");
}

TEST(TensorBoard, ScalarRecordMatchesReferenceBytes) {
  EXPECT_EQ(hex(tfrecord(scalars_event(1700000001.5, 10, {{"train/loss", 1.5f}}))),
            "20 00 00 00 00 00 00 00 29 ed a9 50 09 00 00 60 40 fc 54 d9 41 10 0a 2a 13 0a 11 0a 0a 74 72 61 69 6e 2f "
            "6c 6f 73 73 15 00 00 c0 3f e6 c9 00 66");
}

TEST(TensorBoard, LargeStepIsAMultiByteVarint) {
  // step 300 = 0xAC 0x02 as a base-128 varint.
  const std::string event = scalars_event(0.0, 300, {});
  EXPECT_EQ(hex(event.substr(9, 3)), "10 ac 02");
}

TEST(TensorBoard, ScalarsNamedAsTransformersCallback) {
  const auto scalars = tensorboard_scalars(
      {{"step", 5}, {"loss", 2.0}, {"eval_loss", 1.5}, {"learning_rate", 1e-4}, {"note", "x"}});
  std::vector<std::string> tags;
  for (const auto& [tag, value] : scalars) tags.push_back(tag);
  EXPECT_EQ(tags, (std::vector<std::string>{"eval/loss", "train/learning_rate", "train/loss"}));
}

TEST(TensorBoard, WriterCreatesTfeventsFileWithFramedRecords) {
  const std::string dir = scratch_dir();
  std::string path;
  {
    TensorBoardWriter writer(dir + "/runs");
    writer.add_scalars(1, {{"train/loss", 2.5f}});
    path = writer.path();
  }
  EXPECT_NE(fs::path(path).filename().string().find("tfevents"), std::string::npos);
  const std::string bytes = read_file(path);
  // Two records: the header event and one scalar event; walk the framing.
  size_t offset = 0, records = 0;
  while (offset < bytes.size()) {
    ASSERT_LE(offset + 12, bytes.size());
    uint64_t length = 0;
    for (int i = 0; i < 8; ++i) length |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[offset + i])) << (8 * i);
    EXPECT_EQ(tfrecord(bytes.substr(offset + 12, length)), bytes.substr(offset, 16 + length));
    offset += 16 + length;
    ++records;
  }
  EXPECT_EQ(offset, bytes.size());
  EXPECT_EQ(records, 2u);
}

TEST(HtmlReport, ChartHasOnePathPerSeriesWithPoints) {
  Series loss{"train/loss", "#1f77b4", {{1, 2.0}, {2, 1.5}, {3, 1.2}}};
  Series empty{"eval/loss", "#d62728", {}};
  const std::string svg = svg_line_chart("Loss", "step", {loss, empty});
  EXPECT_NE(svg.find("data-series=\"train/loss\" d=\"M"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("data-series=\"eval/loss\""), std::string::npos);
  EXPECT_EQ(svg.find("no data"), std::string::npos);
  EXPECT_NE(svg_line_chart("Loss", "step", {empty}).find("no data"), std::string::npos);
}

TEST(HtmlReport, SinglePointAndConstantSeriesStayFinite) {
  const std::string svg = svg_line_chart("LR", "step", {Series{"lr", "#000", {{5, 1e-4}}}});
  EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
  EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
  EXPECT_NE(svg.find("<circle"), std::string::npos);
}

TEST(HtmlReport, RendersRowsSummaryConfigAndEscapes) {
  ReportInput input;
  input.run_dir = "out/<run>";
  input.rows = nlohmann::json::array({{{"step", 1}, {"loss", 3.0}, {"learning_rate", 1e-4}},
                                      {{"step", 2}, {"loss", 2.0}, {"learning_rate", 5e-5}, {"eval_loss", 2.5}},
                                      {{"step", 3}, {"loss", 2.2}, {"learning_rate", 0.0}}});
  input.summary = {{"status", "failed"}, {"error", "step 4: the loss is nan"}, {"global_step", 3}, {"total_steps", 10}};
  input.config_yaml = "training:\n  learning_rate: 1e-4\n";
  const std::string html = render_html_report(input);
  EXPECT_NE(html.find("out/&lt;run&gt;"), std::string::npos);
  EXPECT_NE(html.find("class=\"failed\""), std::string::npos);
  EXPECT_NE(html.find("step 4: the loss is nan"), std::string::npos);
  EXPECT_NE(html.find("2.0000 (step 2)"), std::string::npos);  // best loss
  EXPECT_NE(html.find("2.2000 (step 3)"), std::string::npos);  // final loss
  EXPECT_NE(html.find("data-series=\"train/loss\""), std::string::npos);
  EXPECT_NE(html.find("data-series=\"eval/loss\""), std::string::npos);
  EXPECT_NE(html.find("data-series=\"learning_rate\""), std::string::npos);
  EXPECT_NE(html.find("learning_rate: 1e-4"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
}

TEST(HtmlReport, WriteReportNeedsTheLogAndNamesBadLines) {
  const std::string dir = scratch_dir();
  EXPECT_NE(error_of([&] { write_report(dir); }).find("no trainer_log.jsonl"), std::string::npos);
  write_file_atomic(dir + "/trainer_log.jsonl", "{\"step\": 1, \"loss\": 1.0}\nnot json\n");
  EXPECT_NE(error_of([&] { write_report(dir); }).find("trainer_log.jsonl:2: expected one JSON object"),
            std::string::npos);
  write_file_atomic(dir + "/trainer_log.jsonl", "{\"step\": 1, \"loss\": 1.0}\n");
  EXPECT_EQ(write_report(dir), dir + "/report.html");
  EXPECT_TRUE(fs::exists(dir + "/report.html"));
  EXPECT_NE(error_of([&] { write_report(dir + "/missing"); }).find("not a directory"), std::string::npos);
}

TEST(Progress, BarLineShowsStepLossRateThroughputMemoryAndTimes) {
  Progress p;
  p.step = 25;
  p.total_steps = 100;
  p.last_row = {{"loss", 1.23456}, {"learning_rate", 1e-4}, {"tokens_per_second", 812.4},
                {"peak_memory_bytes", 1.5 * (1 << 30)}};
  p.elapsed_seconds = 65;
  p.eta_seconds = 195;
  EXPECT_EQ(progress_bar_line(p, 8), " 25%|##      | 25/100 loss 1.2346 lr 1.00e-04 812 tok/s mem 1.50 GiB 1m05s<3m15s");
  p.eta_seconds = -1;
  p.last_row = nlohmann::json::object();
  EXPECT_EQ(progress_bar_line(p, 4), " 25%|#   | 25/100 1m05s<?");
}

TEST(Progress, PlainLine) {
  const nlohmann::json row = {{"step", 10}, {"loss", 2.5}, {"grad_norm", 0.75}, {"learning_rate", 2e-5},
                              {"epoch", 0.5}, {"tokens_per_second", 100.0}, {"peak_memory_bytes", 0}};
  EXPECT_EQ(plain_log_line(row, 20, 3.5, 3.5),
            "step 10/20 | epoch 0.50 | grad_norm 0.7500 | learning_rate 2.000e-05 | loss 2.5000 | peak_memory 0.00 GiB"
            " | 100 tok/s | elapsed 3.5s | eta 3.5s");
  EXPECT_EQ(format_duration(3725), "1h02m05s");
}

TEST(DataStatistics, CountsAndHistogram) {
  const nlohmann::json stats = data_statistics({10, 20, 30, 40}, {5, 5, 5, 5});
  EXPECT_EQ(stats["rows"], 4);
  EXPECT_EQ(stats["tokens"], 100);
  EXPECT_EQ(stats["target_tokens"], 20);
  EXPECT_EQ(stats["max_length"], 40);
  int64_t rows = 0;
  for (const auto& bin : stats["length_histogram"]) rows += bin["rows"].get<int64_t>();
  EXPECT_EQ(rows, 4);
  EXPECT_EQ(stats["length_histogram"].back()["max"], 40);
  EXPECT_EQ(data_statistics({}, {})["rows"], 0);
}

TEST(RunRecorder, WritesConfigSummaryEventsAndReport) {
  const std::string dir = scratch_dir();
  RunStart start;
  start.output_dir = dir;
  start.total_steps = 4;
  start.tensorboard = true;
  start.config_yaml = "training:\n  learning_rate: 0.001\n";
  start.data = data_statistics({8, 9}, {4, 4});
  RunRecorder recorder(start);
  EXPECT_EQ(read_file(dir + "/qft_config.yaml"), start.config_yaml);
  EXPECT_EQ(nlohmann::json::parse(read_file(dir + "/run_summary.json"))["status"], "running");
  std::ofstream log(dir + "/trainer_log.jsonl");
  for (int step = 1; step <= 2; ++step) {
    recorder.on_step(step, 17);
    const nlohmann::json row = {{"step", step}, {"loss", 3.0 - step}};
    log << row.dump() << "\n" << std::flush;
    recorder.on_log(row);
  }
  recorder.finish("step 3: the loss is nan");
  const nlohmann::json summary = nlohmann::json::parse(read_file(dir + "/run_summary.json"));
  EXPECT_EQ(summary["status"], "failed");
  EXPECT_EQ(summary["global_step"], 2);
  EXPECT_EQ(summary["tokens_seen"], 34);
  EXPECT_EQ(summary["data"]["rows"], 2);
  const std::string html = read_file(dir + "/report.html");
  EXPECT_NE(html.find("step 3: the loss is nan"), std::string::npos);
  EXPECT_NE(html.find("data-series=\"train/loss\""), std::string::npos);
  size_t event_files = 0;
  for (const auto& e : fs::directory_iterator(dir + "/runs")) event_files += e.path().string().find("tfevents") != std::string::npos;
  EXPECT_EQ(event_files, 1u);
}

TEST(RunRecorder, OtherRanksWriteNothing) {
  const std::string dir = scratch_dir();
  RunStart start;
  start.output_dir = dir;
  start.rank = 1;
  start.total_steps = 2;
  start.tensorboard = true;
  start.config_yaml = "x: 1\n";
  RunRecorder recorder(start);
  recorder.on_step(1, 5);
  recorder.on_log({{"step", 1}, {"loss", 1.0}});
  recorder.finish();
  EXPECT_TRUE(fs::is_empty(dir));
}

}  // namespace
}  // namespace qft::report
