// Keys from LLaMA-Factory / TRL / axolotl and qft keys in the wrong section get an error naming the
// qft key and its section (core/config_key_hints.h).
#include <gtest/gtest.h>

#include "core/config_key_hints.h"
#include "core/config_reader.h"
#include "test_support.h"

namespace qft {
namespace {

using test::error_of;

std::string finish_error(const std::string& yaml, const std::string& section, const std::vector<std::string>& read) {
  const YAML::Node root = YAML::Load(yaml);
  ConfigReader top(root, "c.yaml");
  ConfigReader s = top.section(section);
  for (const auto& key : read) s.get_string(key, "");
  return error_of([&] { s.finish(); });
}

TEST(ConfigKeyHints, KeyInTheWrongSectionNamesTheRightOne) {
  const std::string e = finish_error("training:\n  learning_rate: 1\n  save_total_limit: 2\n", "training", {"learning_rate"});
  EXPECT_EQ(e, "c.yaml:3: unknown key 'training.save_total_limit': 'save_total_limit' belongs in the output "
               "section: write it as output.save_total_limit");
  EXPECT_NE(finish_error("training:\n  max_seq_length: 2048\n", "training", {}).find("write it as data.max_seq_length"),
            std::string::npos);
}

TEST(ConfigKeyHints, ForeignNamesNameTheQftKey) {
  EXPECT_EQ(config_key_hint("lora", "lora_rank"), "LLaMA-Factory's 'lora_rank' is qft's 'lora.r'");
  EXPECT_EQ(config_key_hint("data", "cutoff_len"), "LLaMA-Factory's 'cutoff_len' is qft's 'data.max_seq_length'");
  EXPECT_EQ(config_key_hint("training", "num_epochs"), "another trainer's 'num_epochs' is qft's 'training.num_train_epochs'");
  EXPECT_EQ(config_key_hint("training", "bf16"), "HF TrainingArguments's 'bf16' is qft's 'model.torch_dtype' (bf16)");
  EXPECT_NE(config_key_hint("", "template").find("no qft equivalent"), std::string::npos);
  // A key of the section itself, an unknown key and a dataset entry have no hint.
  EXPECT_EQ(config_key_hint("data", "seed"), "");
  EXPECT_EQ(config_key_hint("training", "learning_rat"), "");
  EXPECT_EQ(config_key_hint("data.datasets[0]", "lora_rank"), "");
}

TEST(ConfigKeyHints, FlatLayoutSaysTheConfigIsNested) {
  const YAML::Node root = YAML::Load("model:\n  model_name_or_path: x\nlearning_rate: 1.0e-4\n");
  EXPECT_EQ(error_of([&] { check_top_level_key_hints(root, "c.yaml"); }),
            "c.yaml:3: unknown key 'learning_rate': qft's config is nested in the sections model, lora, data, "
            "training and output; 'learning_rate' goes under training: (training.learning_rate)");
  const YAML::Node lf = YAML::Load("model_name_or_path: Qwen/Qwen3-0.6B\nlora_rank: 8\n");
  EXPECT_NE(error_of([&] { check_top_level_key_hints(lf, "c.yaml"); }).find("'model_name_or_path' goes under model"),
            std::string::npos);
  EXPECT_NE(error_of([&] { check_top_level_key_hints(YAML::Load("lora_rank: 8\n"), "c.yaml"); }).find("is qft's 'lora.r'"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { check_top_level_key_hints(YAML::Load("model: {}\nfoo: 1\n"), "c.yaml"); }), "");
}

TEST(ConfigKeyHints, HubIdSaysHowToDownload) {
  EXPECT_EQ(hub_id_hint("Qwen/Qwen3-8B"),
            "'Qwen/Qwen3-8B' looks like a Hugging Face Hub id, but qft reads local model directories only; download it "
            "once with `huggingface-cli download Qwen/Qwen3-8B --local-dir models/Qwen3-8B` and use models/Qwen3-8B");
  for (const char* local : {"models/qwen3/8b", "./models", "/models/Qwen3-8B", "Qwen3-8B", "a/", "~/m", "a b/c"}) {
    EXPECT_EQ(hub_id_hint(local), "") << local;
  }
}

}  // namespace
}  // namespace qft
