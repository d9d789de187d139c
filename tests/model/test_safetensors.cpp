// safetensors reading/writing and validation, config.json parsing, checkpoint loading.
#include <gtest/gtest.h>
#include <ftw.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/files.h"
#include "io/safetensors.h"
#include "model/qwen3_config.h"
#include "model/qwen3_weights.h"

using namespace qft;
namespace fs = std::filesystem;

namespace {

// std::filesystem::remove_all crashes in binaries linking libtorch.so (which exports its own copy of
// the std::filesystem symbols), so directories are removed with nftw.
void rm_rf(const std::string& path) {
  nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p); }, 16,
       FTW_DEPTH | FTW_PHYS);
}

std::string temp_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("qft_test_" + name + "_" + std::to_string(::getpid()));
  rm_rf(p.string());
  fs::create_directories(p);
  return p.string();
}

std::string u64le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A file from a header string and a data buffer; header_len overrides the length field.
std::string write_raw(const std::string& path, const std::string& header, const std::string& data,
                      int64_t header_len = -1) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::string bytes = u64le(header_len < 0 ? header.size() : static_cast<uint64_t>(header_len)) + header + data;
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

// Expects a qft::Error whose message contains the file path and every fragment.
void expect_error(const std::string& path, std::initializer_list<std::string> fragments) {
  try {
    io::SafetensorsFile f(path);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "missing '" << f << "' in: " << msg;
  }
}

}  // namespace

TEST(Safetensors, RoundTripKeepsValuesDtypesAndMetadata) {
  const std::string dir = temp_dir("roundtrip");
  const std::string path = dir + "/a.safetensors";
  const at::Tensor f32 = at::arange(12, at::kFloat).view({3, 4});
  const at::Tensor bf16 = at::randn({5, 2}).to(at::kBFloat16);
  const at::Tensor i64 = at::tensor({-1, 2, 3}, at::kLong);
  const at::Tensor scalar = at::scalar_tensor(2.5, at::kDouble);
  const at::Tensor empty = at::empty({0, 3}, at::kHalf);
  const at::Tensor strided = at::arange(20, at::kFloat).view({4, 5}).t();  // non-contiguous
  io::save_safetensors(path,
                       {{"f32", f32}, {"bf16", bf16}, {"i64", i64}, {"scalar", scalar}, {"empty", empty},
                        {"strided", strided}},
                       {{"format", "pt"}, {"note", "x"}});
  EXPECT_FALSE(file_exists(path + ".tmp"));
  io::SafetensorsFile f(path);
  EXPECT_EQ(f.names().size(), 6u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "x");
  EXPECT_TRUE(at::equal(f.tensor("f32"), f32));
  EXPECT_TRUE(at::equal(f.tensor("bf16"), bf16));
  EXPECT_TRUE(at::equal(f.tensor("i64"), i64));
  EXPECT_TRUE(at::equal(f.tensor("strided"), strided));
  EXPECT_EQ(f.tensor("scalar").dim(), 0);
  EXPECT_EQ(f.tensor("scalar").item<double>(), 2.5);
  EXPECT_EQ(f.tensor("empty").sizes(), (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(f.info("bf16").dtype, "BF16");
  // HF layout: header padded to 8 bytes, metadata first, then dtype descending (F64 before F32 before BF16).
  const std::string bytes = read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.rfind("{\"__metadata__\":", 0), 0u) << header;
  EXPECT_LT(header.find("\"scalar\""), header.find("\"f32\""));
  EXPECT_LT(header.find("\"f32\""), header.find("\"bf16\""));
  // Views outlive the file object and can be written without touching the file.
  at::Tensor view;
  {
    io::SafetensorsFile g(path);
    view = g.tensor("f32");
  }
  view.add_(1);
  EXPECT_TRUE(at::equal(io::SafetensorsFile(path).tensor("f32"), f32));
  rm_rf(dir);
}

TEST(Safetensors, BadFilesNameTheFileAndTheProblem) {
  const std::string d = temp_dir("bad");
  const std::string ok8 = std::string(8, '\0');
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, int b, int e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
  };
  // Sanity: the helper makes a valid file.
  io::SafetensorsFile good(write_raw(d + "/good.st", "{" + entry("a", "F32", "[2]", 0, 8) + "}", ok8));
  EXPECT_EQ(good.tensor("a").numel(), 2);

  expect_error(write_raw(d + "/short.st", "", "", 0), {"JSON object"});  // only the 8 length bytes, N = 0
  {
    std::ofstream(d + "/tiny.st") << "abc";
    expect_error(d + "/tiny.st", {"truncated", "3 bytes"});
  }
  expect_error(write_raw(d + "/hdrlen.st", "{}", "", 1000), {"header length 1000", "truncated"});
  expect_error(write_raw(d + "/huge.st", "{}", "", 200000000), {"exceeds the limit"});
  expect_error(write_raw(d + "/notjson.st", "{not json", ""), {"not valid UTF-8 JSON"});
  expect_error(write_raw(d + "/array.st", "[1,2]", ""), {"JSON object"});
  expect_error(write_raw(d + "/badutf8.st", "{\"a\xff\":1}", ""), {"JSON"});
  expect_error(write_raw(d + "/hole.st", "{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}",
                         std::string(12, '\0')),
               {"hole", "\"b\"", "starts at 8", "\"a\" ends at 4"});
  expect_error(write_raw(d + "/overlap.st", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) + "}",
                         ok8),
               {"overlap", "\"b\""});
  expect_error(write_raw(d + "/beyond.st", "{" + entry("a", "F32", "[4]", 0, 16) + "}", ok8),
               {"\"a\"", "beyond the data buffer of 8 bytes"});
  expect_error(write_raw(d + "/trailing.st", "{" + entry("a", "F32", "[2]", 0, 8) + "}", ok8 + "xx"),
               {"data buffer is 10 bytes but the tensors cover 8"});
  expect_error(write_raw(d + "/size.st", "{" + entry("a", "F32", "[3]", 0, 8) + "}", ok8),
               {"\"a\"", "F32", "[3]", "need 12 bytes", "span 8"});
  expect_error(write_raw(d + "/dtype.st", "{" + entry("a", "F33", "[2]", 0, 8) + "}", ok8),
               {"\"a\"", "unknown dtype \"F33\""});
  expect_error(write_raw(d + "/shape.st", "{" + entry("a", "F32", "[-2]", 0, 8) + "}", ok8),
               {"\"a\"", "shape", "non-negative"});
  expect_error(write_raw(d + "/offsets.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", ok8),
               {"\"a\"", "data_offsets"});
  expect_error(write_raw(d + "/missing.st", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", ok8),
               {"\"a\"", "missing \"data_offsets\""});
  expect_error(write_raw(d + "/dup.st", "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("a", "F32", "[2]", 0, 8) + "}",
                         ok8),
               {"duplicate key \"a\""});
  expect_error(write_raw(d + "/meta.st", "{\"__metadata__\":{\"format\":1}," + entry("a", "F32", "[2]", 0, 8) + "}", ok8),
               {"__metadata__", "\"format\"", "must be a string"});
  // A known dtype without a torch type is validated, then refused when read.
  io::SafetensorsFile f4(write_raw(d + "/f4.st", "{" + entry("a", "F4", "[4]", 0, 2) + "}", "xx"));
  EXPECT_THROW(f4.tensor("a"), Error);
  EXPECT_THROW(good.tensor("zzz"), Error);
  EXPECT_THROW(io::SafetensorsFile(d + "/does_not_exist.st"), Error);
  rm_rf(d);
}

TEST(Safetensors, UnalignedDataIsCopied) {
  const std::string d = temp_dir("unaligned");
  // Header of 37 bytes: data starts at offset 45, not a multiple of 4.
  std::string header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
  while (header.size() % 8 != 5) header += ' ';
  float v[2] = {1.5f, -2.0f};
  io::SafetensorsFile f(write_raw(d + "/u.st", header, std::string(reinterpret_cast<char*>(v), 8)));
  const at::Tensor t = f.tensor("a");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4, 0u);
  EXPECT_EQ(t[1].item<float>(), -2.0f);
  rm_rf(d);
}

TEST(Safetensors, ShardedWriteAndRead) {
  const std::string d = temp_dir("sharded");
  io::NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), at::full({10}, i, at::kFloat));  // 40 B each
  const auto files = io::save_safetensors_sharded(d, tensors, 100);
  ASSERT_EQ(files.size(), 4u);  // 3 shards (2+2+1 tensors) + index
  EXPECT_EQ(files[0], "model-00001-of-00003.safetensors");
  EXPECT_EQ(files[3], "model.safetensors.index.json");
  const auto index = nlohmann::json::parse(read_file(d + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 200);
  EXPECT_EQ(index["weight_map"]["t4"], "model-00003-of-00003.safetensors");
  // The shards are written as they fill under temporary names (ShardedSafetensorsWriter); none is left.
  size_t entries = 0;
  for (const auto& entry : std::filesystem::directory_iterator(d)) entries += entry.is_regular_file();
  EXPECT_EQ(entries, files.size());
  io::SafetensorsCheckpoint ckpt(d);
  EXPECT_EQ(ckpt.names().size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(at::equal(ckpt.tensor("t" + std::to_string(i)), tensors[i].second));
  EXPECT_THROW(ckpt.tensor("t9"), Error);
  // Single shard: model.safetensors, no index.
  const std::string d1 = temp_dir("single");
  EXPECT_EQ(io::save_safetensors_sharded(d1, tensors).size(), 1u);
  EXPECT_TRUE(file_exists(d1 + "/model.safetensors"));
  EXPECT_EQ(io::SafetensorsCheckpoint(d1).names().size(), 5u);
  // An index naming a tensor its shard lacks.
  write_file_atomic(d + "/model.safetensors.index.json",
                    "{\"weight_map\": {\"t0\": \"model-00002-of-00003.safetensors\"}}");
  try {
    io::SafetensorsCheckpoint bad(d);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("\"t0\""), std::string::npos) << e.what();
  }
  rm_rf(d);
  rm_rf(d1);
}

// ---- config.json ----------------------------------------------------------------------------------

TEST(Qwen3Config, ParsesRealConfigShapes) {
  // Qwen3-0.6B's config.json values (head_dim 128 != 1024 / 16).
  const nlohmann::json j = nlohmann::json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
    "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
    "torch_dtype": "bfloat16", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
  const auto c = model::Qwen3Config::from_json(j, "cfg.json");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.q_size(), 2048);
  EXPECT_EQ(c.kv_size(), 1024);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  const auto back = c.to_json();
  EXPECT_EQ(back["initializer_range"], 0.02);  // uninterpreted keys survive
  EXPECT_EQ(model::Qwen3Config::from_json(back, "back").head_dim, 128);
}

TEST(Qwen3Config, RopeParametersAndDefaults) {
  nlohmann::json j = {{"vocab_size", 10},        {"hidden_size", 8},  {"intermediate_size", 16},
                      {"num_hidden_layers", 1},  {"num_attention_heads", 2},
                      {"rope_parameters", {{"rope_type", "default"}, {"rope_theta", 5000000.0}}}};
  auto c = model::Qwen3Config::from_json(j, "v5.json");
  EXPECT_EQ(c.rope_theta, 5e6);
  EXPECT_EQ(c.head_dim, 4);  // hidden / heads only because head_dim is absent
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.to_json()["rope_parameters"]["rope_theta"], 5e6);
}

TEST(Qwen3Config, ErrorsNameFileAndKey) {
  const nlohmann::json base = {{"vocab_size", 10},       {"hidden_size", 8},         {"intermediate_size", 16},
                               {"num_hidden_layers", 1}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                               {"head_dim", 4}};
  auto expect = [&](nlohmann::json j, const std::string& fragment) {
    try {
      model::Qwen3Config::from_json(j, "my/config.json");
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("my/config.json"), std::string::npos) << msg;
      EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
    }
  };
  nlohmann::json j = base;
  j.erase("hidden_size");
  expect(j, "\"hidden_size\"");
  j = base;
  j["num_attention_heads"] = 0;
  expect(j, "\"num_attention_heads\"");
  j = base;
  j["num_key_value_heads"] = 3;
  expect(j, "multiple");
  j = base;
  j["vocab_size"] = "10";
  expect(j, "\"vocab_size\"");
  j = base;
  // linear and yarn are implemented (tests/reference/test_rope_scaling.py); other rope types are refused.
  j["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4}};
  expect(j, "\"rope_scaling.rope_type\" \"dynamic\" is not supported");
  j["rope_parameters"] = {{"rope_type", "llama3"}, {"factor", 4}};
  expect(j, "\"rope_parameters.rope_type\" \"llama3\" is not supported");
  j.erase("rope_parameters");
  j["rope_scaling"] = {{"type", 2}};
  expect(j, "rope_scaling");
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_NO_THROW(model::Qwen3Config::from_json(j, "my/config.json"));
  j = base;
  j["head_dim"] = 5;
  expect(j, "even");
  EXPECT_THROW(model::Qwen3Config::from_file("/nonexistent/config.json"), Error);
}

// ---- checkpoint loading ---------------------------------------------------------------------------

namespace {

model::Qwen3Config small_config(bool tied) {
  return model::Qwen3Config::from_json({{"vocab_size", 11},       {"hidden_size", 8},        {"intermediate_size", 12},
                                        {"num_hidden_layers", 2}, {"num_attention_heads", 2}, {"num_key_value_heads", 1},
                                        {"head_dim", 6},          {"tie_word_embeddings", tied}},
                                       "small");
}

std::string load_error(const std::string& dir, const model::Qwen3Config& c) {
  try {
    model::Qwen3Weights::load(dir, c, at::kFloat, at::kCPU);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Qwen3Weights, LoadSingleAndShardedConvertingDtype) {
  const auto c = small_config(false);
  const auto w = model::Qwen3Weights::random(c, 3, 0.02, at::kBFloat16);
  const auto named = w.named_tensors(c);
  EXPECT_EQ(named.size(), 1 + 2 * 11 + 2u);
  EXPECT_EQ(named.back().first, "lm_head.weight");
  const std::string d = temp_dir("load");
  io::save_safetensors_sharded(d, named, 400);
  ASSERT_TRUE(file_exists(d + "/model.safetensors.index.json"));
  const auto loaded = model::Qwen3Weights::load(d, c, at::kFloat, at::kCPU);
  const auto ln = loaded.named_tensors(c);
  ASSERT_EQ(ln.size(), named.size());
  for (size_t i = 0; i < ln.size(); ++i) {
    EXPECT_EQ(ln[i].first, named[i].first);
    EXPECT_EQ(ln[i].second.scalar_type(), at::kFloat);
    EXPECT_TRUE(at::equal(ln[i].second, named[i].second.to(at::kFloat))) << ln[i].first;
  }
  EXPECT_FALSE(loaded.tied());
  // Norms start at one; linears at N(0, 0.02).
  EXPECT_TRUE(at::equal(loaded.norm, at::ones({8})));
  EXPECT_NEAR(loaded.embed_tokens.std().item<float>(), 0.02, 0.006);
  rm_rf(d);
}

TEST(Qwen3Weights, TiedAndUntiedEmbeddings) {
  const auto tied = small_config(true);
  const auto w = model::Qwen3Weights::random(tied, 4);
  EXPECT_TRUE(w.tied());
  const auto named = w.named_tensors(tied);
  for (const auto& [n, t] : named) EXPECT_NE(n, "lm_head.weight");
  const std::string d = temp_dir("tied");
  io::save_safetensors(d + "/model.safetensors", named);
  const auto loaded = model::Qwen3Weights::load(d, tied, at::kFloat, at::kCPU);
  EXPECT_TRUE(loaded.tied());
  EXPECT_TRUE(loaded.to(at::kDouble, at::kCPU).tied());
  EXPECT_TRUE(loaded.zeros_like().tied());
  // The same file with an untied config: lm_head is missing.
  const std::string msg = load_error(d, small_config(false));
  EXPECT_NE(msg.find("\"lm_head.weight\""), std::string::npos) << msg;
  EXPECT_NE(msg.find(d), std::string::npos) << msg;
  rm_rf(d);
}

TEST(Qwen3Weights, MissingWrongShapeAndUnexpectedTensors) {
  const auto c = small_config(false);
  auto named = model::Qwen3Weights::random(c, 5).named_tensors(c);
  const std::string d = temp_dir("badload");
  // Missing.
  auto missing = named;
  missing.erase(missing.begin() + 5);
  io::save_safetensors(d + "/model.safetensors", missing);
  std::string msg = load_error(d, c);
  EXPECT_NE(msg.find("missing tensor \"" + named[5].first + "\""), std::string::npos) << msg;
  // Wrong shape.
  auto wrong = named;
  wrong[3].second = at::zeros({3, 8});
  io::save_safetensors(d + "/model.safetensors", wrong);
  msg = load_error(d, c);
  EXPECT_NE(msg.find(named[3].first), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 8]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[6, 8]"), std::string::npos) << msg;
  // A checkpoint with more layers than the config.
  auto extra = named;
  extra.emplace_back("model.layers.2.mlp.up_proj.weight", at::zeros({12, 8}));
  io::save_safetensors(d + "/model.safetensors", extra);
  msg = load_error(d, c);
  EXPECT_NE(msg.find("model.layers.2.mlp.up_proj.weight"), std::string::npos) << msg;
  rm_rf(d);
  EXPECT_NE(load_error(d, c).find("model.safetensors"), std::string::npos);
}
