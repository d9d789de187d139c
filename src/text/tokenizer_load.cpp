// Tokenizer::from_file: reads a Hugging Face tokenizer.json and accepts only what this tokenizer
// reproduces exactly (byte-level BPE with an NFC or no normaliser and the Split + ByteLevel
// pre-tokenizer of Qwen2/Qwen3, or plain GPT-2 style ByteLevel); anything else is an error that
// names the key, rather than ids that silently differ from `tokenizers`.
#include <atomic>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "core/json_reader.h"
#include "text/byte_level_alphabet.h"
#include "text/tokenizer_impl.h"
#include "text/unicode_nfc.h"
#include "text/utf8.h"

namespace qft::text {
namespace {

using nlohmann::json;

// The pre-tokenizer regex of ByteLevel(use_regex = true), i.e. GPT-2's.
constexpr const char* kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

class JsonReader {
 public:
  explicit JsonReader(std::string path) : path_(std::move(path)) {}

  const json& require(const json& object, const std::string& key, const std::string& object_path) const {
    if (!object.is_object()) fail("{}: '{}' must be a JSON object, got {}", path_, object_path, object.type_name());
    auto it = object.find(key);
    if (it == object.end()) fail("{}: missing key '{}'", path_, join(object_path, key));
    return *it;
  }
  std::string require_string(const json& object, const std::string& key, const std::string& object_path) const {
    const json& value = require(object, key, object_path);
    if (!value.is_string()) fail("{}: '{}' must be a string, got {}", path_, join(object_path, key), value.type_name());
    return value.get<std::string>();
  }
  bool optional_bool(const json& object, const std::string& key, const std::string& object_path,
                     bool default_value) const {
    auto it = object.find(key);
    if (it == object.end() || it->is_null()) return default_value;
    if (!it->is_boolean()) fail("{}: '{}' must be true or false, got {}", path_, join(object_path, key), qft::json::excerpt(*it));
    return it->get<bool>();
  }
  int32_t require_id(const json& value, const std::string& key_path) const {
    // Per-id tables are sized by the largest id, so an absurd id would allocate gigabytes; 2^24 is
    // far above any real vocabulary (Qwen3: 151 669).
    constexpr int64_t kIdLimit = int64_t{1} << 24;
    if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<int64_t>() >= kIdLimit) {
      fail("{}: '{}' must be a token id (an integer in [0, 2^24)), got {}", path_, key_path, qft::json::excerpt(value));
    }
    return static_cast<int32_t>(value.get<int64_t>());
  }
  [[noreturn]] void unsupported(const std::string& key_path, const json& value, const char* expected) const {
    fail("{}: unsupported '{}' = {}; expected {}", path_, key_path, qft::json::excerpt(value), expected);
  }
  static std::string join(const std::string& object_path, const std::string& key) {
    return object_path.empty() ? key : object_path + "." + key;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

json read_json_file(const std::string& path) {
  return qft::json::parse_file(path);
}

void load_normalizer(const JsonReader& reader, const json& root, TokenizerModel& impl) {
  auto it = root.find("normalizer");
  if (it == root.end() || it->is_null()) return;
  const std::string type = reader.require_string(*it, "type", "normalizer");
  if (type == "NFC") {
    impl.normalize_nfc = true;
    return;
  }
  if (type == "Sequence") {
    const json& list = reader.require(*it, "normalizers", "normalizer");
    for (size_t i = 0; i < (list.is_array() ? list.size() : 0); ++i) {
      const std::string key = "normalizer.normalizers[" + std::to_string(i) + "]";
      if (reader.require_string(list[i], "type", key) != "NFC") reader.unsupported(key, list[i], "{\"type\": \"NFC\"}");
      impl.normalize_nfc = true;
    }
    if (list.is_array()) return;
  }
  reader.unsupported("normalizer", *it, "null or {\"type\": \"NFC\"}");
}

void check_byte_level_options(const JsonReader& reader, const json& object, const std::string& key_path,
                              bool allow_regex) {
  if (reader.optional_bool(object, "add_prefix_space", key_path, false)) {
    reader.unsupported(key_path + ".add_prefix_space", object["add_prefix_space"], "false");
  }
  if (!allow_regex && reader.optional_bool(object, "use_regex", key_path, true)) {
    reader.unsupported(key_path + ".use_regex", object.value("use_regex", json(true)),
                       "false after a Split pre-tokenizer");
  }
}

void load_pre_tokenizer(const JsonReader& reader, const json& root, TokenizerModel& impl) {
  const json& pre = reader.require(root, "pre_tokenizer", "");
  const char* expected =
      "Sequence[Split(Regex, behavior Isolated, invert false), ByteLevel(add_prefix_space false, use_regex false)] "
      "or ByteLevel(add_prefix_space false, use_regex true)";
  if (pre.is_null()) reader.unsupported("pre_tokenizer", pre, expected);
  const std::string type = reader.require_string(pre, "type", "pre_tokenizer");
  if (type == "ByteLevel") {
    check_byte_level_options(reader, pre, "pre_tokenizer", true);
    if (!reader.optional_bool(pre, "use_regex", "pre_tokenizer", true)) return;
    impl.split_regex.emplace(kGpt2SplitPattern, reader.path() + ": pre_tokenizer (ByteLevel regex)");
    return;
  }
  if (type != "Sequence") reader.unsupported("pre_tokenizer.type", pre["type"], expected);
  const json& list = reader.require(pre, "pretokenizers", "pre_tokenizer");
  if (!list.is_array() || list.size() != 2) reader.unsupported("pre_tokenizer.pretokenizers", list, expected);
  const json& split = list[0];
  const std::string split_key = "pre_tokenizer.pretokenizers[0]";
  if (reader.require_string(split, "type", split_key) != "Split") reader.unsupported(split_key, split, expected);
  const json& pattern = reader.require(split, "pattern", split_key);
  if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string()) {
    reader.unsupported(split_key + ".pattern", pattern, "{\"Regex\": \"...\"}");
  }
  const json& behavior = reader.require(split, "behavior", split_key);
  if (behavior != "Isolated") reader.unsupported(split_key + ".behavior", behavior, "\"Isolated\"");
  if (reader.optional_bool(split, "invert", split_key, false)) {
    reader.unsupported(split_key + ".invert", split["invert"], "false");
  }
  const json& byte_level = list[1];
  const std::string byte_level_key = "pre_tokenizer.pretokenizers[1]";
  if (reader.require_string(byte_level, "type", byte_level_key) != "ByteLevel") {
    reader.unsupported(byte_level_key, byte_level, expected);
  }
  check_byte_level_options(reader, byte_level, byte_level_key, false);
  impl.split_regex.emplace(pattern["Regex"].get<std::string>(), reader.path() + ": " + split_key + ".pattern.Regex");
}

void check_decoder_and_post_processor(const JsonReader& reader, const json& root) {
  const json& decoder = reader.require(root, "decoder", "");
  if (decoder.is_null() || reader.require_string(decoder, "type", "decoder") != "ByteLevel") {
    reader.unsupported("decoder", decoder, "{\"type\": \"ByteLevel\"}");
  }
  auto post = root.find("post_processor");
  if (post != root.end() && !post->is_null() &&
      reader.require_string(*post, "type", "post_processor") != "ByteLevel") {
    reader.unsupported("post_processor", *post, "null or ByteLevel (special tokens are added by the chat template)");
  }
}

// Raw bytes a vocabulary string stands for: each character of the byte-level alphabet is one byte;
// a string with any other character stands for its own UTF-8 (what the ByteLevel decoder does).
std::string bytes_of_token(const std::string& token) {
  std::string bytes;
  size_t pos = 0;
  while (pos < token.size()) {
    const int byte = byte_of_code_point(utf8::decode(token, pos));
    if (byte < 0) return token;
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

void set_token(TokenizerModel& impl, int32_t id, const std::string& token) {
  if (static_cast<size_t>(id) >= impl.id_to_token.size()) {
    const size_t size = static_cast<size_t>(id) + 1;
    impl.id_to_token.resize(size);
    impl.id_to_bytes.resize(size);
    impl.id_is_known.resize(size, 0);
    impl.id_is_special.resize(size, 0);
  }
  impl.id_to_token[id] = token;
  impl.id_to_bytes[id] = bytes_of_token(token);
  impl.id_is_known[id] = 1;
}

void load_model(const JsonReader& reader, const json& root, TokenizerModel& impl) {
  const json& model = reader.require(root, "model", "");
  const std::string type = reader.require_string(model, "type", "model");
  if (type != "BPE") reader.unsupported("model.type", model["type"], "\"BPE\"");
  if (reader.optional_bool(model, "byte_fallback", "model", false)) {
    reader.unsupported("model.byte_fallback", model["byte_fallback"], "false (byte-level BPE needs no fallback)");
  }
  auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && !(dropout->is_number() && dropout->get<double>() == 0.0)) {
    reader.unsupported("model.dropout", *dropout, "null");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && *it != "") reader.unsupported(std::string("model.") + key, *it, "\"\"");
  }
  impl.ignore_merges = reader.optional_bool(model, "ignore_merges", "model", false);

  const json& vocab = reader.require(model, "vocab", "model");
  if (!vocab.is_object() || vocab.empty()) {
    fail("{}: 'model.vocab' must be a non-empty object token -> id, got {}", reader.path(), vocab.type_name());
  }
  impl.token_to_id.reserve(vocab.size() * 2);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int32_t id = reader.require_id(it.value(), "model.vocab[\"" + it.key() + "\"]");
    impl.token_to_id.emplace(it.key(), id);
    set_token(impl, id, it.key());
  }

  const auto& alphabet = byte_to_code_point();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    utf8::append(symbol, alphabet[b]);
    auto it = impl.token_to_id.find(symbol);
    if (it == impl.token_to_id.end()) {
      fail("{}: 'model.vocab' lacks the byte-level symbol '{}' for byte 0x{:02X}; not a byte-level BPE vocabulary",
           reader.path(), symbol, b);
    }
    impl.merger.set_byte_symbol(static_cast<uint8_t>(b), it->second);
  }

  const json& merges = reader.require(model, "merges", "model");
  if (!merges.is_array()) fail("{}: 'model.merges' must be an array, got {}", reader.path(), merges.type_name());
  auto id_of = [&](const std::string& token, size_t rank, const char* role) {
    auto it = impl.token_to_id.find(token);
    if (it == impl.token_to_id.end()) {
      fail("{}: 'model.merges[{}]': {} '{}' is not in model.vocab", reader.path(), rank, role, token);
    }
    return it->second;
  };
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& entry = merges[rank];
    std::string left, right;
    if (entry.is_string()) {
      // The "a b" form: exactly one space (tokens never contain one: it is 'Ġ' in the alphabet).
      const std::string& text = entry.get_ref<const std::string&>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos) {
        fail("{}: 'model.merges[{}]' = {} must be two tokens separated by one space", reader.path(), rank,
             qft::json::excerpt(entry));
      }
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      left = entry[0].get<std::string>();
      right = entry[1].get<std::string>();
    } else {
      fail("{}: 'model.merges[{}]' = {} must be \"a b\" or [\"a\", \"b\"]", reader.path(), rank, qft::json::excerpt(entry));
    }
    const int32_t left_id = id_of(left, rank, "left token");
    const int32_t right_id = id_of(right, rank, "right token");
    const int32_t merged_id = id_of(left + right, rank, "merged token");
    impl.merger.add_merge(left_id, right_id, merged_id, static_cast<uint32_t>(rank));
  }
  if (impl.ignore_merges) {
    for (const auto& [token, id] : impl.token_to_id) impl.bytes_to_id.emplace(impl.id_to_bytes[id], id);
  }
}

void load_added_tokens(const JsonReader& reader, const json& root, TokenizerModel& impl) {
  auto list = root.find("added_tokens");
  if (list == root.end() || list->is_null()) return;
  if (!list->is_array()) fail("{}: 'added_tokens' must be an array, got {}", reader.path(), list->type_name());
  for (size_t i = 0; i < list->size(); ++i) {
    const json& entry = (*list)[i];
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    AddedToken token;
    token.id = reader.require_id(reader.require(entry, "id", key), key + ".id");
    token.content = reader.require_string(entry, "content", key);
    if (token.content.empty()) fail("{}: '{}.content' is empty", reader.path(), key);
    if (utf8::find_invalid(token.content) != std::string::npos) {
      fail("{}: '{}.content' is not valid UTF-8", reader.path(), key);
    }
    token.special = reader.optional_bool(entry, "special", key, false);
    // `tokenizers` defaults `normalized` to true for non-special tokens.
    token.normalized = reader.optional_bool(entry, "normalized", key, !token.special);
    token.lstrip = reader.optional_bool(entry, "lstrip", key, false);
    token.rstrip = reader.optional_bool(entry, "rstrip", key, false);
    token.single_word = reader.optional_bool(entry, "single_word", key, false);
    if (token.normalized && impl.normalize_nfc) token.content = unicode::nfc(token.content);
    impl.added_tokens.push_back(std::move(token));
  }
  for (const AddedToken& token : impl.added_tokens) {
    set_token(impl, token.id, token.content);
    impl.id_is_special[token.id] = token.special ? 1 : 0;
    impl.token_to_id[token.content] = token.id;
  }
  std::vector<const AddedToken*> raw, normalized;
  for (const AddedToken& token : impl.added_tokens) (token.normalized ? normalized : raw).push_back(&token);
  impl.raw_added_matcher = AddedTokenMatcher(raw);
  impl.normalized_added_matcher = AddedTokenMatcher(normalized);
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& tokenizer_json_path) {
  static std::atomic<uint64_t> next_instance_id{1};
  const json root = read_json_file(tokenizer_json_path);
  JsonReader reader(tokenizer_json_path);
  if (!root.is_object()) fail("{}: the top level must be a JSON object, got {}", tokenizer_json_path, root.type_name());
  auto impl = std::make_unique<Impl>();
  impl->source_path = tokenizer_json_path;
  impl->instance_id = next_instance_id.fetch_add(1);
  load_normalizer(reader, root, *impl);
  load_pre_tokenizer(reader, root, *impl);
  check_decoder_and_post_processor(reader, root);
  load_model(reader, root, *impl);
  load_added_tokens(reader, root, *impl);
  return Tokenizer(std::move(impl));
}

}  // namespace qft::text
