#include "hf/model_dir.h"

#include <cctype>
#include <filesystem>

#include "core/error.h"
#include "core/files.h"
#include "core/remove_tree.h"

namespace qft::hf {

namespace fs = std::filesystem;

void write_hf_model_dir(const std::string& dir, const model::Qwen3Config& config, const io::NamedTensors& tensors,
                        uint64_t max_shard_bytes) {
  fs::create_directories(dir);
  io::save_safetensors_sharded(dir, tensors, max_shard_bytes);
  write_hf_config(dir, config);
}

void write_hf_config(const std::string& dir, const model::Qwen3Config& config) {
  write_file_atomic((fs::path(dir) / "config.json").string(), config.to_json().dump(2) + "\n");
}

int copy_tokenizer_files(const std::string& from_dir, const std::string& to_dir) {
  int copied = 0;
  // chat_template.jinja (transformers >= 4.43 saves the template there) and the older chat_template.json
  // keep the chat template wherever the base keeps it.
  for (const char* name : {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                           "generation_config.json", "special_tokens_map.json", "added_tokens.json",
                           "chat_template.jinja", "chat_template.json", "tokenizer.model"}) {
    const fs::path from = fs::path(from_dir) / name;
    if (!fs::exists(from)) continue;
    std::error_code ec;
    fs::copy_file(from, fs::path(to_dir) / name, fs::copy_options::overwrite_existing, ec);
    QFT_CHECK(!ec, "cannot copy {} to {} ({})", from.string(), to_dir, ec.message());
    ++copied;
  }
  return copied;
}

uint64_t parse_byte_size(const std::string& text, const std::string& context) {
  size_t digits_end = 0;
  while (digits_end < text.size() && (std::isdigit(static_cast<unsigned char>(text[digits_end])) || text[digits_end] == '.'))
    ++digits_end;
  QFT_CHECK(digits_end > 0, "{}: '{}' is not a size (e.g. 5GB, 500MB, 2GiB)", context, text);
  double number = 0;
  try {
    number = std::stod(text.substr(0, digits_end));
  } catch (const std::exception&) {
    fail("{}: '{}' is not a size (e.g. 5GB, 500MB, 2GiB)", context, text);
  }
  std::string unit = text.substr(digits_end);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "TB") scale = 1e12;
  else if (unit == "KIB") scale = 1024.0;
  else if (unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else fail("{}: unknown unit in '{}' (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", context, text);
  const double bytes = number * scale;
  QFT_CHECK(bytes >= 1, "{}: '{}' must be at least one byte", context, text);
  return static_cast<uint64_t>(bytes);
}

void move_into_place(const std::string& tmp_dir, const std::string& final_dir) {
  remove_tree(final_dir);
  std::error_code ec;
  fs::rename(tmp_dir, final_dir, ec);
  QFT_CHECK(!ec, "cannot move {} to {} ({})", tmp_dir, final_dir, ec.message());
}

void write_directory_atomically(const std::string& final_dir, const std::string& purpose,
                                const std::function<void(const std::string& tmp_dir)>& write) {
  const fs::path output(final_dir);
  const std::string tmp_dir = (output.parent_path() / ("." + output.filename().string() + "." + purpose + "-tmp")).string();
  remove_tree(tmp_dir);
  try {
    write(tmp_dir);
    move_into_place(tmp_dir, final_dir);
  } catch (...) {
    try {
      remove_tree(tmp_dir);
    } catch (const Error&) {
      // The original error matters more than a leftover temporary directory.
    }
    throw;
  }
}

}  // namespace qft::hf
