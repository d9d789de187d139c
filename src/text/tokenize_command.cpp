#include "text/tokenize_command.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "text/tokenizer.h"
#include "text/utf8.h"

namespace qft::text {
namespace {

using nlohmann::json;

constexpr const char* kUsage =
    "usage: tokenize --tokenizer PATH --input FILE.jsonl [--output FILE] [--threads N]\n"
    "                [--decode [--skip-special-tokens]] [--bench]\n"
    "\n"
    "  --tokenizer PATH        tokenizer.json, or the directory that holds it\n"
    "  --input FILE.jsonl      encode: one {\"text\": \"...\"} object per line;\n"
    "                          decode: one JSON array of token ids per line\n"
    "  --output FILE           encode: one JSON array of ids per line; decode: one {\"text\": ...} per line\n"
    "  --threads N             threads for batch encoding (default: all cores)\n"
    "  --decode                decode id arrays instead of encoding text\n"
    "  --skip-special-tokens   with --decode: leave special tokens out\n"
    "  --bench                 time encoding single-threaded and batched and print MB/s and tokens/s\n";

struct Options {
  std::string tokenizer_path;
  std::string input_path;
  std::string output_path;
  int threads = 0;
  bool decode = false;
  bool skip_special_tokens = false;
  bool bench = false;
};

Options parse_options(const std::vector<std::string>& args) {
  Options options;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) fail("tokenize: {} needs a value\n{}", arg, kUsage);
      return args[++i];
    };
    if (arg == "--tokenizer") {
      options.tokenizer_path = value();
    } else if (arg == "--input") {
      options.input_path = value();
    } else if (arg == "--output") {
      options.output_path = value();
    } else if (arg == "--threads") {
      const std::string& text = value();
      try {
        size_t used = 0;
        options.threads = std::stoi(text, &used);
        if (used != text.size() || options.threads < 1) throw std::invalid_argument(text);
      } catch (const std::exception&) {
        fail("tokenize: --threads must be a positive integer, got '{}'", text);
      }
    } else if (arg == "--decode") {
      options.decode = true;
    } else if (arg == "--skip-special-tokens") {
      options.skip_special_tokens = true;
    } else if (arg == "--bench") {
      options.bench = true;
    } else {
      fail("tokenize: unknown argument '{}'\n{}", arg, kUsage);
    }
  }
  if (options.tokenizer_path.empty()) fail("tokenize: --tokenizer is required\n{}", kUsage);
  if (options.input_path.empty()) fail("tokenize: --input is required\n{}", kUsage);
  if (options.output_path.empty() && !options.bench) fail("tokenize: --output is required (unless --bench)\n{}", kUsage);
  if (options.bench && options.decode) fail("tokenize: --bench measures encoding; it cannot be combined with --decode");
  if (options.skip_special_tokens && !options.decode) fail("tokenize: --skip-special-tokens needs --decode");
  return options;
}

std::string resolve_tokenizer_json(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return (fs::path(path) / "tokenizer.json").string();
  return path;
}

// The lines of a JSONL file (a final newline does not start another line).
std::vector<std::string> read_lines(const std::string& path) {
  const std::string content = read_file(path);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    lines.emplace_back(content, start, end - start);
    start = end + 1;
  }
  return lines;
}

json parse_line(const std::string& path, size_t line_number, const std::string& line, const char* expected) {
  if (line.find_first_not_of(" \t\r") == std::string::npos) {
    fail("{}:{}: empty line; expected {}", path, line_number, expected);
  }
  try {
    return qft::json::parse(line, "");
  } catch (const qft::json::JsonSyntaxError& e) {
    fail("{}:{}: not valid JSON (column {}: {}); expected {}", path, line_number, e.column(), e.reason(), expected);
  }
}

std::vector<std::string> read_texts(const std::string& path) {
  constexpr const char* kExpected = "a JSON object with a string field \"text\"";
  std::vector<std::string> lines = read_lines(path);
  std::vector<std::string> texts;
  texts.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const json object = parse_line(path, i + 1, lines[i], kExpected);
    if (!object.is_object()) fail("{}:{}: got a JSON {}; expected {}", path, i + 1, object.type_name(), kExpected);
    auto text = object.find("text");
    if (text == object.end()) fail("{}:{}: missing key \"text\"; expected {}", path, i + 1, kExpected);
    if (!text->is_string()) {
      fail("{}:{}: \"text\" is a JSON {}; expected {}", path, i + 1, text->type_name(), kExpected);
    }
    texts.push_back(text->get<std::string>());
    lines[i].clear();
    lines[i].shrink_to_fit();
  }
  return texts;
}

std::vector<std::vector<int32_t>> read_id_lists(const std::string& path) {
  constexpr const char* kExpected = "a JSON array of token ids";
  const std::vector<std::string> lines = read_lines(path);
  std::vector<std::vector<int32_t>> lists;
  lists.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const json array = parse_line(path, i + 1, lines[i], kExpected);
    if (!array.is_array()) fail("{}:{}: got a JSON {}; expected {}", path, i + 1, array.type_name(), kExpected);
    std::vector<int32_t> ids;
    ids.reserve(array.size());
    for (size_t k = 0; k < array.size(); ++k) {
      const json& id = array[k];
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        fail("{}:{}: element {} is {}; expected {}", path, i + 1, k, qft::json::excerpt(id), kExpected);
      }
      ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
    lists.push_back(std::move(ids));
  }
  return lists;
}

class OutputFile {
 public:
  explicit OutputFile(const std::string& path) : path_(path), out_(path, std::ios::binary) {
    if (!out_) fail("{}: cannot open the output file for writing", path);
  }
  void write_line(const std::string& line) {
    out_ << line << '\n';
  }
  void close() {
    out_.close();
    if (!out_) fail("{}: writing failed (disk full?)", path_);
  }

 private:
  std::string path_;
  std::ofstream out_;
};

std::string ids_to_json_line(const std::vector<int32_t>& ids) {
  std::string line = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ',';
    line += std::to_string(ids[i]);
  }
  line += ']';
  return line;
}

void write_ids(const std::string& path, const std::vector<std::vector<int32_t>>& encoded) {
  OutputFile out(path);
  for (const auto& ids : encoded) out.write_line(ids_to_json_line(ids));
  out.close();
}

// Wrapping per-text errors with the input location keeps messages pointing at the JSONL line.
std::vector<std::vector<int32_t>> encode_all(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                                             int threads, const std::string& input_path) {
  try {
    return tokenizer.encode_batch(texts, threads);
  } catch (const Error& e) {
    fail("{}: {} (text N is on line N + 1)", input_path, e.what());
  }
}

void run_bench(const Tokenizer& tokenizer, const std::vector<std::string>& texts, const Options& options) {
  size_t total_bytes = 0;
  for (const auto& text : texts) total_bytes += text.size();
  const int batch_threads = options.threads > 0 ? options.threads : static_cast<int>(std::thread::hardware_concurrency());
  constexpr int kRepeats = 3;  // best of three: the first pass also fills the piece caches
  using Clock = std::chrono::steady_clock;

  size_t loop_tokens = 0;
  double loop_seconds = 1e30;
  for (int r = 0; r < kRepeats; ++r) {
    const auto start = Clock::now();
    size_t tokens = 0;
    for (const auto& text : texts) tokens += tokenizer.encode(text).size();
    loop_seconds = std::min(loop_seconds, std::chrono::duration<double>(Clock::now() - start).count());
    loop_tokens = tokens;
  }
  size_t batch_tokens = 0;
  double batch_seconds = 1e30;
  std::vector<std::vector<int32_t>> encoded;
  for (int r = 0; r < kRepeats; ++r) {
    const auto start = Clock::now();
    encoded = encode_all(tokenizer, texts, batch_threads, options.input_path);
    batch_seconds = std::min(batch_seconds, std::chrono::duration<double>(Clock::now() - start).count());
    batch_tokens = 0;
    for (const auto& ids : encoded) batch_tokens += ids.size();
  }
  QFT_CHECK(loop_tokens == batch_tokens, "tokenize --bench: encode and encode_batch disagree ({} vs {} tokens)",
            loop_tokens, batch_tokens);
  const double megabytes = static_cast<double>(total_bytes) / 1e6;
  std::printf("input: %s (%zu texts, %.2f MB, %zu tokens)\n", options.input_path.c_str(), texts.size(), megabytes,
              loop_tokens);
  std::printf("%-22s %8s %10s %10s %14s\n", "mode", "threads", "seconds", "MB/s", "tokens/s");
  std::printf("%-22s %8d %10.3f %10.2f %14.0f\n", "qft encode (loop)", 1, loop_seconds, megabytes / loop_seconds,
              static_cast<double>(loop_tokens) / loop_seconds);
  std::printf("%-22s %8d %10.3f %10.2f %14.0f\n", "qft encode_batch", batch_threads, batch_seconds,
              megabytes / batch_seconds, static_cast<double>(batch_tokens) / batch_seconds);
  std::fflush(stdout);
  if (!options.output_path.empty()) write_ids(options.output_path, encoded);
}

}  // namespace

int run_tokenize_command(const std::vector<std::string>& args) {
  if (std::find(args.begin(), args.end(), "--help") != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const Options options = parse_options(args);
  // Input is read before the tokenizer is loaded so that a bad line fails fast.
  if (options.decode) {
    const auto id_lists = read_id_lists(options.input_path);
    const Tokenizer tokenizer = Tokenizer::from_file(resolve_tokenizer_json(options.tokenizer_path));
    OutputFile out(options.output_path);
    for (size_t i = 0; i < id_lists.size(); ++i) {
      std::string text;
      try {
        text = tokenizer.decode(id_lists[i], options.skip_special_tokens);
      } catch (const Error& e) {
        fail("{}:{}: {}", options.input_path, i + 1, e.what());
      }
      out.write_line(json{{"text", text}}.dump());
    }
    out.close();
    return 0;
  }

  const std::vector<std::string> texts = read_texts(options.input_path);
  const Tokenizer tokenizer = Tokenizer::from_file(resolve_tokenizer_json(options.tokenizer_path));
  if (options.bench) {
    run_bench(tokenizer, texts, options);
    return 0;
  }
  write_ids(options.output_path, encode_all(tokenizer, texts, options.threads, options.input_path));
  return 0;
}

}  // namespace qft::text
