#include "report/html_report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <fmt/format.h>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"

namespace qft::report {

namespace {

namespace fs = std::filesystem;

constexpr double kWidth = 640, kHeight = 300;
constexpr double kLeft = 72, kRight = 16, kTop = 34, kBottom = 44;

std::string escape_html(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// 1, 2 or 5 times a power of ten, about range/5 (the usual "nice" axis steps).
double nice_step(double range) {
  if (!(range > 0)) return 1.0;
  const double raw = range / 5.0;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double fraction = raw / magnitude;
  return (fraction < 1.5 ? 1.0 : fraction < 3.5 ? 2.0 : fraction < 7.5 ? 5.0 : 10.0) * magnitude;
}

std::string tick_label(double v, double step) {
  if (std::fabs(v) < step * 1e-6) return "0";
  const double a = std::fabs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.2e}", v);
  const int decimals = std::max(0, -static_cast<int>(std::floor(std::log10(step))));
  return fmt::format("{:.{}f}", v, decimals);
}

struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  // A single value still gets a visible axis.
  void widen() {
    if (hi - lo <= std::fabs(hi) * 1e-9) {
      const double pad = hi == 0 ? 1.0 : std::fabs(hi) * 0.1;
      lo -= pad;
      hi += pad;
    }
  }
};

std::string format_number(const nlohmann::json& v, const char* spec = "{:.4g}") {
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) return fmt::format(fmt::runtime(spec), v.get<double>());
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  return v.dump();
}

std::string format_seconds(double s) {
  const int64_t total = static_cast<int64_t>(std::llround(s));
  if (total >= 3600) return fmt::format("{}h{:02d}m{:02d}s", total / 3600, (total / 60) % 60, total % 60);
  if (total >= 60) return fmt::format("{}m{:02d}s", total / 60, total % 60);
  return fmt::format("{:.1f}s", s);
}

Series series_of(const nlohmann::json& rows, const std::string& key, const std::string& name, const std::string& color,
                 double scale = 1.0) {
  Series s{name, color, {}};
  for (const auto& row : rows) {
    if (!row.is_object() || !row.contains("step") || !row.contains(key)) continue;
    const auto& x = row["step"];
    const auto& y = row[key];
    if (!x.is_number() || !y.is_number()) continue;
    const double yv = y.get<double>() * scale;
    if (std::isfinite(yv)) s.points.emplace_back(x.get<double>(), yv);
  }
  return s;
}

void table_row(std::string& html, const std::string& name, const std::string& value) {
  html += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", escape_html(name), escape_html(value));
}

}  // namespace

std::string svg_line_chart(const std::string& title, const std::string& x_label, const std::vector<Series>& series) {
  Range xr, yr;
  size_t points = 0;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      xr.add(x);
      yr.add(y);
      ++points;
    }
  }
  std::string svg = fmt::format(
      "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "role=\"img\" aria-label=\"{2}\">\n<rect x=\"0\" y=\"0\" width=\"{0}\" height=\"{1}\" fill=\"#ffffff\"/>\n"
      "<text x=\"{3}\" y=\"20\" font-size=\"14\" font-weight=\"bold\">{2}</text>\n",
      kWidth, kHeight, escape_html(title), kLeft);
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  if (points == 0) {
    svg += fmt::format("<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#777\">no data</text>\n</svg>\n",
                       kLeft + plot_w / 2 - 20, kTop + plot_h / 2);
    return svg;
  }
  xr.widen();
  yr.widen();
  const double y_step = nice_step(yr.hi - yr.lo);
  const double y_lo = std::floor(yr.lo / y_step) * y_step, y_hi = std::ceil(yr.hi / y_step) * y_step;
  const double x_step = nice_step(xr.hi - xr.lo);
  auto px = [&](double x) { return kLeft + (x - xr.lo) / (xr.hi - xr.lo) * plot_w; };
  auto py = [&](double y) { return kTop + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h; };

  for (double y = y_lo; y <= y_hi + y_step * 0.5; y += y_step) {
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#e5e5e5\"/>"
                       "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"end\">{}</text>\n",
                       kLeft, py(y), kLeft + plot_w, py(y), kLeft - 6, py(y) + 4, tick_label(y, y_step));
  }
  for (double x = std::ceil(xr.lo / x_step) * x_step; x <= xr.hi + x_step * 1e-9; x += x_step) {
    svg += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#999\"/>"
                       "<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"11\" text-anchor=\"middle\">{}</text>\n",
                       px(x), kTop + plot_h, px(x), kTop + plot_h + 4, px(x), kTop + plot_h + 17,
                       tick_label(x, x_step));
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#999\"/>\n", kLeft,
                     kTop, plot_w, plot_h);
  svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\n",
                     kLeft + plot_w / 2, kHeight - 8, escape_html(x_label));
  double legend_x = kWidth - kRight;
  for (auto it = series.rbegin(); it != series.rend(); ++it) {
    const Series& s = *it;
    if (s.points.empty()) continue;
    std::string d;
    for (const auto& [x, y] : s.points) d += fmt::format("{}{:.2f},{:.2f}", d.empty() ? "M" : " L", px(x), py(y));
    svg += fmt::format("<path class=\"curve\" data-series=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\" "
                       "stroke-width=\"2.5\" stroke-linejoin=\"round\"/>\n",
                       escape_html(s.name), d, s.color);
    // A lone point has no line: draw it as a dot.
    for (const auto& [x, y] : s.points) {
      if (s.points.size() <= 20) {
        svg += fmt::format("<circle cx=\"{:.2f}\" cy=\"{:.2f}\" r=\"3\" fill=\"{}\"/>\n", px(x), py(y), s.color);
      }
    }
    const double text_w = 7.0 * static_cast<double>(s.name.size());
    legend_x -= text_w + 22;
    svg += fmt::format("<rect x=\"{:.1f}\" y=\"12\" width=\"12\" height=\"4\" fill=\"{}\"/>"
                       "<text x=\"{:.1f}\" y=\"19\" font-size=\"12\">{}</text>\n",
                       legend_x, s.color, legend_x + 16, escape_html(s.name));
    legend_x -= 8;
  }
  svg += "</svg>\n";
  return svg;
}

std::string render_html_report(const ReportInput& input) {
  const nlohmann::json& rows = input.rows;
  const nlohmann::json& summary = input.summary;
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>qft run report</title>\n<style>\n"
      "body{font-family:sans-serif;margin:24px;color:#222;max-width:1340px}\n"
      "h1{font-size:22px}h2{font-size:17px;margin-top:28px}\n"
      "table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}\n"
      "th{background:#f5f5f5;font-weight:normal;color:#555}\n"
      ".charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #ddd}\n"
      "pre{background:#f7f7f7;padding:10px;font-size:12px;overflow-x:auto}\n"
      ".failed{color:#b00020;font-weight:bold}.completed{color:#1b7a1b;font-weight:bold}\n"
      "</style>\n</head>\n<body>\n";
  html += fmt::format("<h1>qft run report: {}</h1>\n", escape_html(input.run_dir));

  html += "<h2>Summary</h2>\n<table>\n";
  const std::string status = summary.value("status", rows.empty() ? "no steps logged" : "unknown");
  html += fmt::format("<tr><th>status</th><td class=\"{}\">{}</td></tr>\n", escape_html(status), escape_html(status));
  if (summary.contains("error")) table_row(html, "error", summary["error"].get<std::string>());
  if (summary.contains("global_step")) {
    table_row(html, "steps", fmt::format("{} of {}", format_number(summary["global_step"]),
                                         format_number(summary.value("total_steps", nlohmann::json()))));
  }
  if (summary.contains("elapsed_seconds")) table_row(html, "time", format_seconds(summary["elapsed_seconds"]));
  if (summary.contains("tokens_seen")) table_row(html, "tokens seen", format_number(summary["tokens_seen"]));
  // Final and best loss come from the rows, so a redraw from trainer_log.jsonl alone still has them.
  const Series loss = series_of(rows, "loss", "train/loss", "#1f77b4");
  if (!loss.points.empty()) {
    const auto best = std::min_element(loss.points.begin(), loss.points.end(),
                                       [](const auto& a, const auto& b) { return a.second < b.second; });
    table_row(html, "final loss", fmt::format("{:.4f} (step {})", loss.points.back().second, loss.points.back().first));
    table_row(html, "best loss", fmt::format("{:.4f} (step {})", best->second, best->first));
  }
  const Series eval_loss = series_of(rows, "eval_loss", "eval/loss", "#d62728");
  if (!eval_loss.points.empty()) {
    table_row(html, "final eval loss", fmt::format("{:.4f}", eval_loss.points.back().second));
  }
  for (const char* key : {"started_at", "finished_at", "world_size", "description"}) {
    if (summary.contains(key)) table_row(html, key, format_number(summary[key]));
  }
  if (summary.contains("outputs") && summary["outputs"].is_array()) {
    std::string list;
    for (const auto& o : summary["outputs"]) list += (list.empty() ? "" : ", ") + o.get<std::string>();
    table_row(html, "written", list);
  }
  html += "</table>\n";

  html += "<h2>Curves</h2>\n<div class=\"charts\">\n";
  html += svg_line_chart("Loss", "step", {loss, eval_loss});
  html += svg_line_chart("Learning rate", "step", {series_of(rows, "learning_rate", "learning_rate", "#2ca02c")});
  html += svg_line_chart("Gradient norm", "step", {series_of(rows, "grad_norm", "grad_norm", "#9467bd")});
  html += svg_line_chart("Throughput", "step", {series_of(rows, "tokens_per_second", "tokens/s", "#ff7f0e")});
  html += svg_line_chart("Peak memory", "step",
                         {series_of(rows, "peak_memory_bytes", "GiB", "#8c564b", 1.0 / (1024.0 * 1024.0 * 1024.0))});
  html += "</div>\n";

  if (summary.contains("data") && summary["data"].is_object() && !summary["data"].empty()) {
    const nlohmann::json& data = summary["data"];
    html += "<h2>Data</h2>\n<table>\n";
    for (const auto& [key, value] : data.items()) {
      if (key != "length_histogram") table_row(html, key, format_number(value));
    }
    html += "</table>\n";
    if (data.contains("length_histogram") && data["length_histogram"].is_array()) {
      html += "<p>Row lengths (tokens):</p>\n<table>\n<tr><th>length</th><th>rows</th></tr>\n";
      for (const auto& bin : data["length_histogram"]) {
        html += fmt::format("<tr><td>{}&ndash;{}</td><td>{}</td></tr>\n", format_number(bin["min"]),
                            format_number(bin["max"]), format_number(bin["rows"]));
      }
      html += "</table>\n";
    }
  }

  if (!rows.empty()) {
    const nlohmann::json& last = rows.back();
    html += "<h2>Throughput and memory (last logged step)</h2>\n<table>\n";
    for (const auto& [key, value] : last.items()) table_row(html, key, format_number(value));
    html += "</table>\n";
  }

  html += "<h2>Config</h2>\n";
  html += input.config_yaml.empty() ? std::string("<p>(no qft_config.yaml in the run directory)</p>\n")
                                    : "<pre>" + escape_html(input.config_yaml) + "</pre>\n";
  html += "</body>\n</html>\n";
  return html;
}

nlohmann::json read_log_rows(const std::string& path) {
  std::ifstream in(path);
  QFT_CHECK(in.good(), "{}: cannot open the training log", path);
  nlohmann::json rows = nlohmann::json::array();
  std::string line;
  int64_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json row;
    try {
      row = json::parse(line, fmt::format("{}:{}", path, line_number));
    } catch (const json::JsonSyntaxError& e) {
      fail("{}:{}: expected one JSON object per line (column {}: {})", path, line_number, e.column(), e.reason());
    }
    QFT_CHECK(row.is_object(), "{}:{}: expected one JSON object per line", path, line_number);
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string write_report(const std::string& run_dir) {
  QFT_CHECK(fs::is_directory(run_dir), "{}: not a directory (expected a training output_dir)", run_dir);
  const fs::path dir(run_dir);
  QFT_CHECK(fs::exists(dir / kLogFileName), "{}: no {} (expected a training output_dir)", run_dir, kLogFileName);
  ReportInput input;
  input.run_dir = run_dir;
  input.rows = read_log_rows((dir / kLogFileName).string());
  if (fs::exists(dir / kConfigFileName)) input.config_yaml = read_file((dir / kConfigFileName).string());
  if (fs::exists(dir / kSummaryFileName)) {
    const std::string path = (dir / kSummaryFileName).string();
    input.summary = json::parse_file(path);
    QFT_CHECK(input.summary.is_object(), "{}: expected a JSON object", path);
  }
  const std::string out = (dir / kReportFileName).string();
  write_file_atomic(out, render_html_report(input));
  return out;
}

}  // namespace qft::report
