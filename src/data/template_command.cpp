#include "data/template_command.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/files.h"
#include "data/data_config.h"
#include "data/dataset_reader.h"

namespace qft::data {

namespace {

constexpr const char* kBeginTarget = "\xC2\xAB";  // «
constexpr const char* kEndTarget = "\xC2\xBB";    // »

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The line (.jsonl) or item number (.json) of record `index`, or -1 when the file has fewer records.
int64_t line_of_record(const std::string& contents, bool json_list, int64_t index, int64_t records_seen) {
  if (json_list) return index < records_seen ? index + 1 : -1;
  int64_t line = 0, seen = 0;
  size_t start = 0;
  while (start < contents.size()) {
    size_t end = contents.find('\n', start);
    if (end == std::string::npos) end = contents.size();
    ++line;
    const bool blank = std::all_of(contents.begin() + static_cast<std::ptrdiff_t>(start),
                                   contents.begin() + static_cast<std::ptrdiff_t>(end),
                                   [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
    if (!blank && seen++ == index) return line;
    start = end + 1;
  }
  return -1;
}

// The single record at `line` of a JSONL text, read strictly so that its problem is thrown with file:line
// (the earlier lines become blank lines, which readers skip, so line numbers stay right).
[[noreturn]] void throw_problem_of_line(const std::string& path, const std::string& contents, int64_t line,
                                        DataFormat format) {
  size_t start = 0;
  for (int64_t l = 1; l < line; ++l) start = contents.find('\n', start) + 1;
  const size_t end = std::min(contents.find('\n', start), contents.size());
  ProblemLog strict(true);
  read_dataset_text(path, std::string(static_cast<size_t>(line - 1), '\n') + contents.substr(start, end - start),
                    false, format, {}, strict);
  fail("{}:{}: the record was skipped (a problem with the data set's first record decides its format)", path, line);
}

}  // namespace

std::string mark_targets(const std::string& text, const std::vector<uint32_t>& offsets,
                         const std::vector<uint8_t>& targets, const std::string& begin_marker,
                         const std::string& end_marker) {
  std::string out;
  out.reserve(text.size() + 64);
  bool inside = false;
  size_t copied = 0;
  for (size_t i = 0; i <= offsets.size(); ++i) {
    const bool target = i < offsets.size() && targets[i];
    const size_t at = i < offsets.size() ? offsets[i] : text.size();
    if (target == inside) continue;
    out.append(text, copied, at - copied);
    copied = at;
    out += target ? begin_marker : end_marker;
    inside = target;
  }
  out.append(text, copied, std::string::npos);
  return out;
}

std::string template_view(const TemplateRequest& request, const text::Tokenizer& tokenizer) {
  QFT_CHECK(request.index >= 0, "template: --index must be >= 0, got {}", request.index);
  const std::string& path = request.data_path;
  QFT_CHECK(ends_with(path, ".jsonl") || ends_with(path, ".json"),
            "data file '{}': expected a .jsonl (one record per line) or .json (a list of records) file", path);
  const std::string contents = read_file(path);
  const bool json_list = ends_with(path, ".json");
  ProblemLog lenient(false);
  const DatasetContents data = read_dataset_text(path, contents, json_list, request.format, {}, lenient);
  const int64_t line = line_of_record(contents, json_list, request.index, data.records_seen);
  QFT_CHECK(line > 0, "{}: --index {} but the file has {} records", path, request.index, data.records_seen);
  const auto found = std::find_if(data.samples.begin(), data.samples.end(),
                                  [&](const SourcedSample& s) { return s.line == line; });
  if (found == data.samples.end()) {
    if (!json_list) throw_problem_of_line(path, contents, line, data.format);
    fail("{}: item {} is unusable: {}", path, line, lenient.summary());
  }

  TokenizedSample sample;
  std::string rendered;
  text::Encoding encoding;
  if (found->sample.kind == Sample::Kind::text) {
    // Pre-training text: the text's tokens, then <|endoftext|> (appended as an id, not as text).
    sample = tokenize_text(found->sample.text, tokenizer);
    encoding = tokenizer.encode_with_offsets(found->sample.text);
    encoding.offsets.push_back(static_cast<uint32_t>(found->sample.text.size()));
    rendered = found->sample.text + "<|endoftext|>";
  } else {
    const text::Conversation& conversation = found->sample.conversation;
    sample = tokenize_chat(conversation, tokenizer, request.mask);
    rendered = text::render_qwen3_chat(request.mask.enable_thinking ? conversation : without_reasoning(conversation)).text;
    encoding = tokenizer.encode_with_offsets(rendered);
  }
  QFT_CHECK(encoding.offsets.size() == sample.ids.size(), "{}: {} offsets for {} tokens", data.location(line),
            encoding.offsets.size(), sample.ids.size());
  const int64_t target_count = std::count(sample.targets.begin(), sample.targets.end(), 1);
  std::string out = fmt::format("{}: {} record, rendered with the Qwen3 template; target tokens are between {} and {}\n",
                                data.location(line), format_name(data.format), kBeginTarget, kEndTarget);
  out += mark_targets(rendered, encoding.offsets, sample.targets, kBeginTarget, kEndTarget);
  if (!rendered.empty() && rendered.back() != '\n') out += "\n";
  out += fmt::format("-- {} tokens, {} targets (enable_thinking: {}, mask_history: {}, train_on_prompt: {})\n",
                     sample.ids.size(), target_count, request.mask.enable_thinking, request.mask.mask_history,
                     request.mask.train_on_prompt);
  return out;
}

namespace {

void print_help() {
  std::fprintf(stderr,
               "usage: qft-dist template DATA.jsonl --tokenizer PATH [--index N] [--format NAME]\n"
               "                         [--enable-thinking true|false] [--mask-history] [--train-on-prompt]\n\n"
               "Prints one record as the model sees it: the text the Qwen3 chat template renders (as\n"
               "transformers' apply_chat_template), with the tokens trained on between \xC2\xAB and \xC2\xBB, and\n"
               "the token count. Reading, rendering, tokenizing and masking are those of `prepare`.\n\n"
               "  --tokenizer PATH         tokenizer.json or a directory holding one (required)\n"
               "  --index N                the record at 0-based position N (default 0; blank lines not counted)\n"
               "  --format NAME            auto (default), alpaca, sharegpt, openai or text\n"
               "  --enable-thinking BOOL   false: train for non-thinking mode (data.enable_thinking)\n"
               "  --mask-history           only the last assistant turn is a target (data.mask_history)\n"
               "  --train-on-prompt        every token is a target (data.train_on_prompt)\n");
}

bool parse_bool(const std::string& value, const char* flag) {
  if (value == "true") return true;
  if (value == "false") return false;
  fail("template: {} expects true or false, got '{}'", flag, value);
}

}  // namespace

int run_template_command(const std::vector<std::string>& args) {
  TemplateRequest request;
  std::string tokenizer_path;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const auto value = [&](const char* flag) -> std::string {
      QFT_CHECK(i + 1 < args.size(), "template: {} needs a value", flag);
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      print_help();
      return 0;
    } else if (arg == "--tokenizer") {
      tokenizer_path = value("--tokenizer");
    } else if (arg == "--index") {
      const std::string text = value("--index");
      size_t used = 0;
      try {
        request.index = std::stoll(text, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      QFT_CHECK(used == text.size() && used > 0, "template: --index expects a record number, got '{}'", text);
    } else if (arg == "--format") {
      request.format = parse_format_name(value("--format"));
    } else if (arg == "--enable-thinking") {
      request.mask.enable_thinking = parse_bool(value("--enable-thinking"), "--enable-thinking");
    } else if (arg == "--mask-history") {
      request.mask.mask_history = true;
    } else if (arg == "--train-on-prompt") {
      request.mask.train_on_prompt = true;
    } else if (!arg.empty() && arg[0] == '-') {
      fail("template: unknown option '{}' (see qft-dist template --help)", arg);
    } else {
      QFT_CHECK(request.data_path.empty(), "template: one data file expected, got '{}' and '{}'", request.data_path, arg);
      request.data_path = arg;
    }
  }
  if (request.data_path.empty()) {
    print_help();
    return 2;
  }
  QFT_CHECK(!tokenizer_path.empty(), "template: --tokenizer PATH is required (tokenizer.json or its directory)");
  const text::Tokenizer tokenizer = text::Tokenizer::from_file(resolve_tokenizer_path(tokenizer_path));
  const std::string view = template_view(request, tokenizer);
  std::fwrite(view.data(), 1, view.size(), stdout);
  return 0;
}

}  // namespace qft::data
