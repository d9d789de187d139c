#include "data/dataset_reader.h"

#include <algorithm>
#include <string_view>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "text/utf8.h"

namespace qft::data {

using Json = nlohmann::ordered_json;

namespace {

bool is_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class RecordParser {
 public:
  RecordParser(DatasetContents& out, DataFormat format, ColumnMap columns, ProblemLog& problems)
      : out_(out), format_(format), columns_(std::move(columns)), problems_(problems) {}

  void add(const Json& record, int64_t line) {
    ++out_.records_seen;
    try {
      if (out_.format == DataFormat::auto_detect) {
        out_.format = detect_format(record, columns_);
        columns_.validate_for(out_.format, out_.path);
      }
      out_.samples.push_back({parse_record(record, out_.format, columns_), line});
    } catch (const BadRecord& bad) {
      problems_.report(bad.problem(), out_.location(line), bad.what());
    }
  }

  void start() {
    out_.format = format_;
    if (format_ != DataFormat::auto_detect) columns_.validate_for(format_, out_.path);
  }

 private:
  DatasetContents& out_;
  DataFormat format_;
  ColumnMap columns_;
  ProblemLog& problems_;
};

// Records are read as Python's json reads them (json::parse_ordered: big integers exact, NaN/Infinity and
// overflowing floats accepted), iteratively and with a nesting cap.
json::ReadOptions record_options() {
  json::ReadOptions options;
  options.allow_non_finite = true;
  return options;
}

size_t line_of_byte(const std::string& text, size_t byte) {
  return 1 + static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(std::min(byte, text.size())), '\n'));
}

void read_json_lines(const std::string& contents, RecordParser& parser, DatasetContents& out, ProblemLog& problems) {
  size_t start = 0;
  int64_t line_number = 0;
  while (start < contents.size()) {
    size_t end = contents.find('\n', start);
    if (end == std::string::npos) end = contents.size();
    const std::string_view line(contents.data() + start, end - start);
    start = end + 1;
    ++line_number;
    if (is_blank(line)) continue;
    const size_t invalid = text::utf8::find_invalid(line);
    if (invalid != std::string_view::npos) {
      ++out.records_seen;
      problems.report(Problem::invalid_utf8, out.location(line_number),
                      fmt::format("invalid UTF-8 at byte {} of the line", invalid + 1));
      continue;
    }
    Json record;
    try {
      record = json::parse_ordered(line, out.location(line_number), record_options());
    } catch (const json::JsonSyntaxError& e) {
      ++out.records_seen;
      problems.report(Problem::malformed_json, out.location(line_number),
                      fmt::format("malformed JSON at column {} of the line: {}", e.column(), e.reason()));
      continue;
    }
    parser.add(record, line_number);
  }
}

void read_json_list(const std::string& contents, RecordParser& parser, DatasetContents& out, ProblemLog& problems) {
  // A .json file is one document: a problem with its syntax or encoding loses the whole file.
  const size_t invalid = text::utf8::find_invalid(contents);
  if (invalid != std::string::npos) {
    problems.report(Problem::invalid_utf8, fmt::format("{}:{}", out.path, line_of_byte(contents, invalid)),
                    "invalid UTF-8; the whole .json file is skipped");
    return;
  }
  Json document;
  try {
    document = json::parse_ordered(contents, out.path, record_options());
  } catch (const json::JsonSyntaxError& e) {
    problems.report(Problem::malformed_json, fmt::format("{}:{}", out.path, e.line()),
                    fmt::format("malformed JSON at column {}: {}; the whole .json file is skipped", e.column(), e.reason()));
    return;
  }
  if (!document.is_array()) {
    problems.report(Problem::wrong_type, fmt::format("{}:1", out.path),
                    "a .json data file must hold a list of records (use .jsonl for one record per line)");
    return;
  }
  for (size_t i = 0; i < document.size(); ++i) parser.add(document[i], static_cast<int64_t>(i) + 1);
}

}  // namespace

std::string DatasetContents::location(int64_t line) const {
  return json_list ? fmt::format("{}: item {}", path, line) : fmt::format("{}:{}", path, line);
}

DatasetContents read_dataset_text(const std::string& name, const std::string& contents, bool json_list,
                                  DataFormat format, ColumnMap columns, ProblemLog& problems) {
  DatasetContents out;
  out.path = name;
  out.json_list = json_list;
  RecordParser parser(out, format, std::move(columns), problems);
  parser.start();
  if (is_blank(contents)) {
    problems.report(Problem::empty_file, fmt::format("{}:1", name), "the file is empty");
    return out;
  }
  if (json_list) {
    read_json_list(contents, parser, out, problems);
  } else {
    read_json_lines(contents, parser, out, problems);
  }
  return out;
}

DatasetContents read_dataset_file(const std::string& path, DataFormat format, ColumnMap columns, ProblemLog& problems) {
  QFT_CHECK(ends_with(path, ".jsonl") || ends_with(path, ".json"),
            "data file '{}': expected a .jsonl (one record per line) or .json (a list of records) file", path);
  return read_dataset_text(path, read_file(path), ends_with(path, ".json"), format, std::move(columns), problems);
}

}  // namespace qft::data
