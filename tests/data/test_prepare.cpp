// The whole pipeline: config -> cache, reuse by key, mixing by ratio, strict/lenient, truncation counts.
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "data/demo_data.h"
#include "data/packed_dataset.h"
#include "data/prepare.h"
#include "data/token_cache.h"
#include "../text/test_support.h"

namespace qft::data {
namespace {

DataConfig config_for(const std::string& dir, const std::vector<std::string>& files) {
  DataConfig config;
  for (const auto& f : files) config.datasets.push_back({f, DataFormat::auto_detect, {}, std::nullopt, std::nullopt});
  config.cache_dir = dir + "/cache";
  config.tokenizer = test::qwen3_tokenizer_json();
  config.threads = 2;
  return config;
}

TEST(Prepare, DemoDataEndToEndAndReuse) {
  const std::string dir = test::scratch_dir();
  const auto files = write_demo_dataset(dir);
  DataConfig config = config_for(dir, files);
  config.max_seq_length = 512;
  const PrepareReport first = prepare_dataset(config);
  EXPECT_FALSE(first.reused);
  EXPECT_EQ(first.samples, 360);
  EXPECT_TRUE(first.skipped.empty());
  EXPECT_GT(first.target_tokens, 0);
  EXPECT_LT(first.target_tokens, first.tokens);
  ASSERT_EQ(first.datasets.size(), 3u);
  EXPECT_EQ(first.datasets[0].format, "openai");
  EXPECT_EQ(first.datasets[1].format, "alpaca");
  EXPECT_EQ(first.datasets[2].format, "sharegpt");
  EXPECT_EQ(first.cache_path, token_cache_path(config));

  const PrepareReport second = prepare_dataset(config);
  EXPECT_TRUE(second.reused);
  EXPECT_EQ(second.samples, first.samples);
  EXPECT_EQ(second.tokens, first.tokens);
  EXPECT_EQ(second.target_tokens, first.target_tokens);
  ASSERT_EQ(second.datasets.size(), 3u);
  EXPECT_EQ(second.datasets[2].selected, first.datasets[2].selected);

  // Any change of the inputs or options is a different cache.
  DataConfig other = config;
  other.mask_history = true;
  EXPECT_NE(token_cache_path(other), first.cache_path);
  other = config;
  other.seed = 7;
  EXPECT_NE(token_cache_path(other), first.cache_path);

  // Same config, forced rebuild: byte-identical samples (determinism).
  const TokenCacheReader before(first.cache_path);
  const auto samples_before = before.read(0, before.num_samples());
  const PrepareReport forced = prepare_dataset(config, "", true);
  EXPECT_FALSE(forced.reused);
  const TokenCacheReader after(forced.cache_path);
  const auto samples_after = after.read(0, after.num_samples());
  ASSERT_EQ(samples_before.size(), samples_after.size());
  for (size_t i = 0; i < samples_before.size(); ++i) EXPECT_EQ(samples_before[i].ids, samples_after[i].ids);

  const PackedDataset packed(first.cache_path, 512, true);
  EXPECT_LT(packed.num_rows(), 360);
  EXPECT_EQ(packed.pad_token_id(), test::qwen3_tokenizer().token_to_id("<|endoftext|>"));
}

TEST(Prepare, RatioMixing) {
  const std::string dir = test::scratch_dir();
  const auto files = write_demo_dataset(dir);
  DataConfig config = config_for(dir, {files[0], files[1]});
  config.datasets[0].ratio = 0.75;  // 240 chat samples
  config.datasets[1].ratio = 0.25;  // 60 alpaca samples -> limits the mixture to 240
  const PrepareReport report = prepare_dataset(config);
  EXPECT_EQ(report.samples, 240);
  EXPECT_EQ(report.datasets[0].selected, 180);
  EXPECT_EQ(report.datasets[1].selected, 60);
}

TEST(Prepare, LenientSkipsStrictStops) {
  const std::string dir = test::scratch_dir();
  write_file_atomic(dir + "/mixed.jsonl",
                    "{\"instruction\": \"q\", \"output\": \"a\"}\n"
                    "{\"instruction\": \"q\"}\n"
                    "not json\n"
                    "{\"instruction\": \"" + std::string(3000, 'x') + " " + std::string(3000, 'y') + "\", \"output\": \"a\"}\n");
  DataConfig config = config_for(dir, {dir + "/mixed.jsonl"});
  config.max_seq_length = 64;
  config.truncation = Truncation::drop;
  const PrepareReport report = prepare_dataset(config);
  EXPECT_EQ(report.samples, 1);
  EXPECT_EQ(report.skipped.at("missing_field"), 1);
  EXPECT_EQ(report.skipped.at("malformed_json"), 1);
  EXPECT_EQ(report.skipped.at("too_long"), 1);

  config.truncation = Truncation::truncate_prompt;
  const PrepareReport truncated = prepare_dataset(config);
  EXPECT_EQ(truncated.samples, 2);
  EXPECT_EQ(truncated.truncated, 1);
  const TokenCacheReader reader(truncated.cache_path);
  for (const int64_t length : reader.sample_lengths()) EXPECT_LE(length, 64);

  config.strict = true;
  try {
    prepare_dataset(config);
    FAIL() << "strict mode accepted bad input";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mixed.jsonl:2: "), std::string::npos) << e.what();
  }
}

TEST(Prepare, NoUsableSamplesIsAnError) {
  const std::string dir = test::scratch_dir();
  write_file_atomic(dir + "/empty.jsonl", "");
  write_file_atomic(dir + "/bad.jsonl", "{oops\n");
  EXPECT_THROW(prepare_dataset(config_for(dir, {dir + "/empty.jsonl", dir + "/bad.jsonl"})), Error);
}

TEST(Prepare, AnEmptyDataSetNextToAGoodOneIsLeftOut) {
  const std::string dir = test::scratch_dir();
  write_file_atomic(dir + "/empty.jsonl", "\n");
  write_file_atomic(dir + "/good.jsonl", "{\"text\": \"hello\"}\n");
  const PrepareReport report = prepare_dataset(config_for(dir, {dir + "/empty.jsonl", dir + "/good.jsonl"}));
  EXPECT_EQ(report.samples, 1);
  EXPECT_EQ(report.skipped.at("empty_file"), 1);
}

TEST(Prepare, AnEmptyDataSetInARatioMixtureIsLeftOut) {
  const std::string dir = test::scratch_dir();
  write_file_atomic(dir + "/bad.jsonl", "{oops\n");
  write_file_atomic(dir + "/good.jsonl", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
  DataConfig config = config_for(dir, {dir + "/bad.jsonl", dir + "/good.jsonl"});
  config.datasets[0].ratio = 0.5;
  config.datasets[1].ratio = 0.5;
  const PrepareReport report = prepare_dataset(config);
  EXPECT_EQ(report.samples, 2);
  EXPECT_EQ(report.datasets[0].selected, 0);
}

TEST(Prepare, LongPretrainingTextIsSplitIntoChunks) {
  const std::string dir = test::scratch_dir();
  std::string text;
  for (int i = 0; i < 300; ++i) text += "word ";
  write_file_atomic(dir + "/text.jsonl", "{\"text\": \"" + text + "\"}\n");
  DataConfig config = config_for(dir, {dir + "/text.jsonl"});
  config.max_seq_length = 100;
  const PrepareReport report = prepare_dataset(config);
  EXPECT_EQ(report.samples, 4);  // 301 tokens with <|endoftext|>
  EXPECT_EQ(report.text_chunks, 3);
  EXPECT_EQ(report.target_tokens, report.tokens);
}

TEST(DemoData, CommittedCopyMatchesTheGenerator) {
  for (const DemoFile& file : demo_dataset_files()) {
    const std::string committed = std::string(QFT_SOURCE_DIR) + "/configs/demo-data/" + file.name;
    ASSERT_TRUE(file_exists(committed)) << committed << " (regenerate: qft-dist prepare --write-demo-data configs/demo-data)";
    EXPECT_EQ(read_file(committed), file.contents) << file.name;
  }
}

TEST(DemoData, MixesLanguagesToolsAndReasoning) {
  const auto files = demo_dataset_files();
  const std::string& chat = files[0].contents;
  EXPECT_NE(chat.find("tool_calls"), std::string::npos);
  EXPECT_NE(chat.find("reasoning_content"), std::string::npos);
  EXPECT_NE(chat.find("<think>"), std::string::npos);
  EXPECT_NE(chat.find("琪琪"), std::string::npos);
  EXPECT_NE(chat.find("Qiqi"), std::string::npos);
}

}  // namespace
}  // namespace qft::data
