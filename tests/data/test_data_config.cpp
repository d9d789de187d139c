// The data: section of the YAML config.
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/files.h"
#include "data/data_config.h"
#include "../text/test_support.h"

namespace qft::data {
namespace {

DataConfig parse(const std::string& yaml) {
  ConfigReader top(YAML::Load(yaml), "cfg.yaml");
  ConfigReader section = top.section("data");
  DataConfig config = read_data_config(section);
  section.finish();
  return config;
}

std::string error_of(const std::string& yaml) {
  return test::error_of([&] { parse(yaml); });
}

TEST(DataConfig, AllKeys) {
  const DataConfig c = parse(R"(
data:
  datasets:
    - path: a.jsonl
      format: alpaca
      columns: {instruction: prompt, output: response}
      ratio: 0.25
    - path: b.jsonl
      ratio: 0.75
  num_samples: 1000
  max_seq_length: 4096
  truncation: drop
  mask_history: true
  packing: false
  enable_thinking: false
  strict: true
  seed: 7
  cache_dir: /tmp/c
  tokenizer: tok.json
  preprocessing_num_workers: 3
)");
  ASSERT_EQ(c.datasets.size(), 2u);
  EXPECT_EQ(c.datasets[0].format, DataFormat::alpaca);
  EXPECT_EQ(c.datasets[0].columns.key(DataFormat::alpaca, "instruction"), "prompt");
  EXPECT_DOUBLE_EQ(c.datasets[1].ratio.value(), 0.75);
  EXPECT_EQ(c.num_samples.value(), 1000);
  EXPECT_EQ(c.max_seq_length, 4096);
  EXPECT_EQ(c.truncation, Truncation::drop);
  EXPECT_TRUE(c.mask_history);
  EXPECT_FALSE(c.packing);
  EXPECT_FALSE(c.enable_thinking);
  EXPECT_TRUE(c.strict);
  EXPECT_EQ(c.seed, 7u);
  EXPECT_EQ(c.cache_dir, "/tmp/c");
  EXPECT_EQ(c.tokenizer, "tok.json");
  EXPECT_EQ(c.threads, 3);
}

TEST(DataConfig, Defaults) {
  const DataConfig c = parse("data:\n  datasets:\n    - path: a.jsonl\n");
  EXPECT_EQ(c.max_seq_length, 2048);
  EXPECT_EQ(c.truncation, Truncation::truncate_prompt);
  EXPECT_FALSE(c.train_on_prompt);
  EXPECT_FALSE(c.mask_history);
  EXPECT_TRUE(c.packing);
  EXPECT_TRUE(c.enable_thinking);
  EXPECT_FALSE(c.strict);
  EXPECT_EQ(c.datasets[0].format, DataFormat::auto_detect);
}

TEST(DataConfig, ErrorsNameTheKey) {
  EXPECT_NE(error_of("data:\n  datasets: []\n").find("data.datasets"), std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n  max_seq_lenght: 5\n").find("did you mean 'max_seq_length'"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      ratio: 0.5\n    - path: b.jsonl\n").find("all must have one"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      ratio: 0.5\n      count: 3\n").find("not both"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n  truncation: left\n").find("truncate_prompt"), std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      format: csv\n").find("data.datasets[0].format"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      format: alpaca\n      columns: {instrucion: p}\n")
                .find("did you mean 'instruction'"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n  train_on_prompt: true\n  mask_history: true\n")
                .find("contradicts"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n  num_samples: 10\n").find("ratio"), std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      ratio: .inf\n").find("data.datasets[0].ratio"),
            std::string::npos);
  EXPECT_NE(error_of("data:\n  datasets:\n    - path: a.jsonl\n      columns: {[a, b]: p}\n").find("data.datasets[0].columns"),
            std::string::npos);
}

// The example in docs/CONFIG.md (first yaml block of its "## data" section) is a valid data: section.
TEST(DataConfig, DocumentedExampleParses) {
  const std::string docs = read_file(std::string(QFT_SOURCE_DIR) + "/docs/CONFIG.md");
  const size_t section = docs.find("\n## data");
  ASSERT_NE(section, std::string::npos);
  const size_t begin = docs.find("```yaml\n", section);
  ASSERT_NE(begin, std::string::npos);
  const size_t end = docs.find("```", begin + 8);
  const DataConfig c = parse(docs.substr(begin + 8, end - begin - 8));
  EXPECT_EQ(c.datasets.size(), 2u);
  EXPECT_FALSE(c.num_samples.has_value());
  EXPECT_TRUE(c.tokenizer.empty());
}

TEST(DataConfig, TokenizerPathFromFileOrDirectory) {
  const std::string json = test::qwen3_tokenizer_json();
  EXPECT_EQ(resolve_tokenizer_path(json), json);
  EXPECT_EQ(resolve_tokenizer_path(std::filesystem::path(json).parent_path().string()), json);
  EXPECT_THROW(resolve_tokenizer_path("/nonexistent"), Error);
  EXPECT_THROW(resolve_tokenizer_path(""), Error);
}

}  // namespace
}  // namespace qft::data
