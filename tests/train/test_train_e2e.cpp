// End-to-end training on a tiny random Qwen3 on the CPU: the loss falls on a memorisable data set,
// gradient accumulation equals a bigger micro-batch, resume is exact, NaN stops the run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "core/error.h"
#include "core/files.h"
#include "model/qwen3_weights.h"
#include "hf/model_dir.h"
#include "hf/peft_adapter.h"
#include "core/remove_tree.h"
#include "train_test_support.h"
#include "train/train_config.h"
#include "train/lr_schedule.h"
#include "train/trainer.h"

namespace {

namespace fs = std::filesystem;
using namespace qft;
using namespace qft::train;
using namespace qft::hf;
using namespace qft::train::testing;

constexpr int64_t kVocab = 256;
constexpr double kFp16LmHeadGain = 1000.0;

// A tiny Qwen3 (2 layers, GQA 4/2, hidden 64). Weights are random normal(0, 0.02) as transformers
// initialises them, except the (tied) embedding, drawn with std 0.2: with std 0.02 the logits of a
// 64-wide model stay within about +-1.3, so no adapter could make any token likely and "the loss
// falls" would test nothing. Real checkpoints have logits of that larger scale.
// `lm_head_gain` multiplies the untied lm_head (the fp16 test's model overflows fp16 gradients at
// torch's initial loss scale with a larger one).
void write_tiny_model(const std::string& dir, bool tied, double lm_head_gain = 10.0) {
  const nlohmann::json j = {{"architectures", {"Qwen3ForCausalLM"}},
                            {"model_type", "qwen3"},
                            {"vocab_size", kVocab},
                            {"hidden_size", 64},
                            {"intermediate_size", 128},
                            {"num_hidden_layers", 2},
                            {"num_attention_heads", 4},
                            {"num_key_value_heads", 2},
                            {"head_dim", 16},
                            {"rms_norm_eps", 1e-6},
                            {"rope_theta", 1000000.0},
                            {"max_position_embeddings", 256},
                            {"tie_word_embeddings", tied},
                            {"torch_dtype", "float32"}};
  const model::Qwen3Config config = model::Qwen3Config::from_json(j, "tiny");
  model::Qwen3Weights weights = model::Qwen3Weights::random(config, 1234, 0.02, at::kFloat);
  weights.embed_tokens.mul_(10.0);
  if (!tied) weights.lm_head.mul_(lm_head_gain);
  write_hf_model_dir(dir, config, weights.named_tensors(config), 5000000000ULL);
}

// `rows` rows of `length` random tokens with labels = input_ids (every token after the first is a
// target): small enough to memorise.
void write_rows(const std::string& path, int rows, int length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::ofstream out(path);
  for (int r = 0; r < rows; ++r) {
    nlohmann::json ids = nlohmann::json::array();
    for (int t = 0; t < length; ++t) ids.push_back(static_cast<int64_t>(rng() % kVocab));
    out << nlohmann::json{{"input_ids", ids}, {"labels", ids}}.dump() << "\n";
  }
}

class TrainE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    write_tiny_model(dir_ / "model", /*tied=*/true);
    write_rows(dir_ / "data.jsonl", 8, 16, 77);
  }

  // A LoRA config with test defaults; `overrides` ("training.max_steps=4") replace or add keys, as
  // qft-dist's --override does.
  TrainConfig config(const std::string& output, const std::vector<std::string>& overrides) const {
    YAML::Node root = YAML::Load("model:\n  model_name_or_path: " + (dir_ / "model") +
                                 "\n  device: cpu\nlora:\n  r: 8\n  lora_alpha: 16\n  target_modules: all-linear\n"
                                 "data:\n  pretokenized: " + (dir_ / "data.jsonl") +
                                 "\ntraining:\n  logging_steps: 1\n  save_steps: 0\n  seed: 3\n"
                                 "output:\n  output_dir: " + output + "\n");
    for (const auto& o : overrides) apply_override(root, o);
    return parse_train_config(root, "test.yaml");
  }

  static std::vector<double> losses(const TrainSummary& summary) {
    std::vector<double> out;
    for (const auto& row : summary.log) out.push_back(row.at("loss").get<double>());
    return out;
  }

  TempDir dir_;
};

TEST_F(TrainE2E, LoraLearnsAMemorisableDataSet) {
  const std::string out = dir_ / "run";
  const TrainSummary summary =
      run_training(config(out, {"training.learning_rate=1e-2", "training.max_steps=30",
                                "training.per_device_train_batch_size=4", "training.lr_scheduler_type=constant",
                                "training.save_steps=10", "output.save_total_limit=2"}));
  ASSERT_EQ(summary.log.size(), 30u);
  const std::vector<double> l = losses(summary);
  std::printf("LoRA loss: step 1 %.4f, step 10 %.4f, step 20 %.4f, step 30 %.4f\n", l[0], l[9], l[19], l[29]);
  EXPECT_LT(l.back(), 0.5 * l.front());

  // trainer_log.jsonl: one row per logged step with the keys the reference tests read.
  std::ifstream log(out + "/trainer_log.jsonl");
  std::string line;
  int rows = 0;
  while (std::getline(log, line)) {
    const nlohmann::json row = nlohmann::json::parse(line);
    ++rows;
    EXPECT_EQ(row.at("step"), rows);
    for (const char* key : {"loss", "grad_norm", "learning_rate", "epoch"}) EXPECT_TRUE(row.at(key).is_number());
    EXPECT_DOUBLE_EQ(row.at("learning_rate").get<double>(), 1e-2);
  }
  EXPECT_EQ(rows, 30);
  EXPECT_DOUBLE_EQ(summary.log.back().at("epoch").get<double>(), 15.0);  // 8 rows, 4 per step

  // The final adapter is a PEFT adapter of the base model.
  const model::Qwen3Config base = model::Qwen3Config::from_file(dir_ / "model/config.json");
  const model::LoraWeights adapter = load_peft_adapter(out, base);
  EXPECT_EQ(adapter.config.r, 8);
  EXPECT_EQ(adapter.config.target_modules.size(), 7u);
  EXPECT_GT(adapter.layers[1][0].B.abs().max().item<float>(), 0.0f);  // B left its zero init

  // save_total_limit: 2 keeps the newest two of checkpoint-10/20/30.
  EXPECT_FALSE(fs::exists(out + "/checkpoint-10"));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-20/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/checkpoint-30/trainer_state.json"));
}

TEST_F(TrainE2E, AccumulationEqualsABiggerMicroBatch) {
  // Rows of different lengths, so token-weighted accumulation (HF num_items_in_batch) matters:
  // averaging per micro-batch would give a different loss and gradient.
  {
    std::ofstream out(dir_ / "uneven.jsonl");
    std::mt19937_64 rng(5);
    for (int r = 0; r < 8; ++r) {
      nlohmann::json ids = nlohmann::json::array();
      const int length = r % 2 == 0 ? 12 : 5;
      for (int t = 0; t < length; ++t) ids.push_back(static_cast<int64_t>(rng() % kVocab));
      out << nlohmann::json{{"input_ids", ids}, {"labels", ids}}.dump() << "\n";
    }
  }
  const std::vector<std::string> common = {"training.learning_rate=5e-3", "training.max_steps=8",
                                           "training.shuffle=false", "data.pretokenized=" + (dir_ / "uneven.jsonl")};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  const TrainSummary big = run_training(config(dir_ / "big", with({"training.per_device_train_batch_size=2"})));
  const TrainSummary accumulated = run_training(config(
      dir_ / "acc", with({"training.per_device_train_batch_size=1", "training.gradient_accumulation_steps=2"})));
  const auto a = losses(big), b = losses(accumulated);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(a[i])) << "step " << i + 1;
    EXPECT_NEAR(big.log[i].at("grad_norm").get<double>(), accumulated.log[i].at("grad_norm").get<double>(),
                1e-4 * big.log[i].at("grad_norm").get<double>())
        << "step " << i + 1;
  }
  EXPECT_LT(a[4], a[0]);  // steps 1 and 5 see the same two rows (file order, 4 steps per epoch)
}

TEST_F(TrainE2E, ResumeIsExact) {
  // Shuffled, several epochs, LoRA dropout, warmup + linear decay: everything a resume must restore.
  const std::vector<std::string> settings = {
      "training.learning_rate=1e-2", "training.max_steps=8",    "training.per_device_train_batch_size=3",
      "training.warmup_steps=2",     "training.weight_decay=0.01", "training.save_steps=4",
      "lora.lora_dropout=0.1"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), settings.begin(), settings.end());
    return extra;
  };
  const TrainSummary full = run_training(config(dir_ / "full", settings));
  ASSERT_TRUE(fs::exists(dir_ / "full/checkpoint-4/trainer_state.json"));
  ASSERT_TRUE(fs::exists(dir_ / "full/checkpoint-8/optimizer/dp0-tp0.h5"));
  EXPECT_EQ(qft::read_file(dir_ / "full/latest"), "checkpoint-8\n");

  const std::string resume = "training.resume_from_checkpoint=" + (dir_ / "full/checkpoint-4");
  const TrainSummary resumed = run_training(config(dir_ / "resumed", with({resume})));
  ASSERT_EQ(resumed.log.size(), 8u);  // steps 1-4 from the checkpoint's history, 5-8 run again
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(resumed.log[i].at("loss").get<double>(), full.log[i].at("loss").get<double>()) << "step " << i + 1;
    EXPECT_EQ(resumed.log[i].at("grad_norm").get<double>(), full.log[i].at("grad_norm").get<double>());
    EXPECT_EQ(resumed.log[i].at("learning_rate").get<double>(), full.log[i].at("learning_rate").get<double>());
  }
  const model::Qwen3Config base = model::Qwen3Config::from_file(dir_ / "model/config.json");
  const auto a = load_peft_adapter(dir_ / "full", base).named_tensors();
  const auto b = load_peft_adapter(dir_ / "resumed", base).named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;

  // The resumed log file holds every step once.
  std::ifstream log(dir_ / "resumed/trainer_log.jsonl");
  std::string line;
  int rows = 0;
  while (std::getline(log, line)) EXPECT_EQ(nlohmann::json::parse(line).at("step"), ++rows);
  EXPECT_EQ(rows, 8);

  // "latest" picks the checkpoint output_dir/latest names. A run killed after its last checkpoint but
  // before its final save resumes at the last step: no step runs, and the final adapter is written.
  fs::remove(dir_ / "full/adapter_model.safetensors");
  fs::remove(dir_ / "full/adapter_config.json");
  const TrainSummary finished = run_training(config(dir_ / "full", with({"training.resume_from_checkpoint=latest"})));
  EXPECT_EQ(finished.log.size(), 8u);
  const auto c = load_peft_adapter(dir_ / "full", base).named_tensors();
  ASSERT_EQ(a.size(), c.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, c[i].second)) << a[i].first;
  // Beyond the run's last step is still an error.
  EXPECT_CONTAINS(error_of([&] {
                    run_training(config(dir_ / "full", with({"training.resume_from_checkpoint=latest",
                                                             "training.max_steps=6"})));
                  }),
                  "checkpoint-8 is at step 8, the run has only 6 steps");

  // `latest` naming a directory that is gone is an error naming both; without the file, the newest
  // complete checkpoint is taken, and a half-written checkpoint-<step>.tmp is never one.
  fs::create_directories(dir_ / "pointer");
  fs::copy(dir_ / "full/checkpoint-4", dir_ / "pointer/checkpoint-4", fs::copy_options::recursive);
  qft::write_file_atomic(dir_ / "pointer/latest", "checkpoint-6\n");
  EXPECT_CONTAINS(error_of([&] {
                    run_training(config(dir_ / "pointer", with({"training.resume_from_checkpoint=latest"})));
                  }),
                  "pointer/latest names " + (dir_ / "pointer/checkpoint-6") + ", which does not exist");
  fs::remove(dir_ / "pointer/latest");
  fs::create_directories(dir_ / "pointer/checkpoint-8.tmp/optimizer");
  const TrainSummary fallback = run_training(config(dir_ / "pointer", with({"training.resume_from_checkpoint=latest"})));
  ASSERT_EQ(fallback.log.size(), 8u);
  EXPECT_EQ(fallback.log[7].at("loss").get<double>(), full.log[7].at("loss").get<double>());
  EXPECT_FALSE(fs::exists(dir_ / "pointer/checkpoint-8.tmp"));  // the save of step 8 removed it
  EXPECT_EQ(qft::read_file(dir_ / "pointer/latest"), "checkpoint-8\n");

  // A checkpoint only resumes the config it was trained with.
  try {
    run_training(config(dir_ / "other", with({resume, "training.adam_beta2=0.95"})));
    ADD_FAILURE() << "resume with another adam_beta2 was accepted";
  } catch (const qft::Error& e) {
    EXPECT_CONTAINS(e.what(), "training.adam_beta2: 0.999 vs 0.95");
  }
}

TEST_F(TrainE2E, FullFineTuningLearnsAndResumes) {
  const std::vector<std::string> settings = {"lora.finetuning_type=full", "training.learning_rate=3e-3",
                                             "training.max_steps=6", "training.per_device_train_batch_size=4",
                                             "training.save_steps=3", "training.weight_decay=0.1"};
  const TrainSummary run = run_training(config(dir_ / "full", settings));
  const auto l = losses(run);
  ASSERT_EQ(l.size(), 6u);
  std::printf("full fine-tuning loss: step 1 %.4f, step 6 %.4f\n", l.front(), l.back());
  EXPECT_LT(l.back(), 0.8 * l.front());
  // The output is a Hugging Face model directory that loads as a base model.
  const model::Qwen3Config config_out = model::Qwen3Config::from_file(dir_ / "full/config.json");
  const model::Qwen3Weights trained = model::Qwen3Weights::load(dir_ / "full", config_out, at::kFloat, at::kCPU);
  const model::Qwen3Weights original = model::Qwen3Weights::load(dir_ / "model", config_out, at::kFloat, at::kCPU);
  EXPECT_FALSE(at::equal(trained.layers[0][model::Projection::q].trainable_weight(), original.layers[0][model::Projection::q].trainable_weight()));

  std::vector<std::string> resume = settings;
  resume.push_back("training.resume_from_checkpoint=" + (dir_ / "full/checkpoint-3"));
  const TrainSummary resumed = run_training(config(dir_ / "resumed", resume));
  const auto r = losses(resumed);
  ASSERT_EQ(r.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(r[i], l[i]) << "step " << i + 1;
  const model::Qwen3Weights again = model::Qwen3Weights::load(dir_ / "resumed", config_out, at::kFloat, at::kCPU);
  EXPECT_TRUE(at::equal(again.layers[1][model::Projection::down].trainable_weight(), trained.layers[1][model::Projection::down].trainable_weight()));
  EXPECT_TRUE(at::equal(again.embed_tokens, trained.embed_tokens));
}

// fp16 compute on the CPU with dynamic loss scaling. The model's large lm_head makes the activation
// gradients overflow fp16 at torch's initial scale 2**16: the first steps are skipped (no update, scale
// halved, no grad_norm), then training goes on. As in HF Trainer, a skipped step counts as a step but the
// LR schedule does not advance on it; a resume restores the scaler.
TEST_F(TrainE2E, Fp16SkipsOverflowStepsLikeGradScalerAndResumesExactly) {
  write_tiny_model(dir_ / "loud", /*tied=*/false, /*lm_head_gain=*/kFp16LmHeadGain);
  const std::vector<std::string> settings = {
      "model.model_name_or_path=" + (dir_ / "loud"), "model.torch_dtype=fp16", "training.learning_rate=1e-2",
      "training.max_steps=12", "training.per_device_train_batch_size=4", "training.save_steps=6"};
  const TrainSummary run = run_training(config(dir_ / "fp16", settings));
  ASSERT_EQ(run.log.size(), 12u);
  const LrSchedule schedule("linear", 1e-2, 0, 12);
  double scale = 65536.0;
  int64_t skipped = 0;
  for (size_t i = 0; i < run.log.size(); ++i) {
    const nlohmann::json& row = run.log[i];
    const bool skip = row.at("grad_norm").is_null();
    EXPECT_TRUE(std::isfinite(row.at("loss").get<double>())) << "step " << i + 1;
    // Backoff 0.5 on overflow; no growth within growth_interval (2000) steps.
    EXPECT_EQ(row.at("loss_scale").get<double>(), skip ? scale * 0.5 : scale) << "step " << i + 1;
    EXPECT_NEAR(row.at("learning_rate").get<double>(), schedule.learning_rate(static_cast<int64_t>(i) - skipped), 1e-15)
        << "step " << i + 1;
    scale = row.at("loss_scale").get<double>();
    skipped += skip ? 1 : 0;
  }
  std::printf("fp16: %lld of 12 steps skipped on overflow, final loss scale %g, loss %.4f -> %.4f\n",
              static_cast<long long>(skipped), scale, run.log.front().at("loss").get<double>(),
              run.log.back().at("loss").get<double>());
  EXPECT_GE(skipped, 1);   // the test's premise: 2**16 overflows this model
  EXPECT_LE(skipped, 6);   // and a few halvings cure it
  EXPECT_LT(run.log.back().at("loss").get<double>(), run.log.front().at("loss").get<double>());

  const std::string resume = "training.resume_from_checkpoint=" + (dir_ / "fp16/checkpoint-6");
  std::vector<std::string> resumed_settings = settings;
  resumed_settings.push_back(resume);
  const TrainSummary resumed = run_training(config(dir_ / "fp16-resumed", resumed_settings));
  ASSERT_EQ(resumed.log.size(), 12u);
  for (size_t i = 6; i < 12; ++i) {
    for (const char* key : {"loss", "grad_norm", "learning_rate", "loss_scale"})
      EXPECT_EQ(resumed.log[i].at(key), run.log[i].at(key)) << "step " << i + 1 << " " << key;
  }
  const model::Qwen3Config base = model::Qwen3Config::from_file(dir_ / "loud/config.json");
  const auto a = load_peft_adapter(dir_ / "fp16", base).named_tensors();
  const auto b = load_peft_adapter(dir_ / "fp16-resumed", base).named_tensors();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
}

TEST_F(TrainE2E, NonFiniteLossStopsNamingTheStepWithoutFinalOutput) {
  const std::string out = dir_ / "nan";
  try {
    run_training(config(out, {"training.learning_rate=1e30", "training.max_steps=10",
                              "training.per_device_train_batch_size=4", "training.lr_scheduler_type=constant",
                              "training.max_grad_norm=0"}));
    ADD_FAILURE() << "a learning rate of 1e30 trained without error";
  } catch (const qft::Error& e) {
    const std::string message = e.what();
    EXPECT_CONTAINS(message, "step 2:");
    EXPECT_CONTAINS(message, "no final adapter");
    std::printf("NaN run stopped with: %s\n", message.c_str());
  }
  EXPECT_FALSE(fs::exists(out + "/adapter_config.json"));
  EXPECT_FALSE(fs::exists(out + "/adapter_model.safetensors"));
}

TEST_F(TrainE2E, BadConfigsAndOccupiedOutputAreErrors) {
  EXPECT_THROW(config(dir_ / "x", {"training.learning_rate=fast"}), qft::Error);
  EXPECT_THROW(config(dir_ / "x", {"training.max_step=3"}), qft::Error);
  EXPECT_THROW(config(dir_ / "x", {"lora.target_modules=[lm_head]"}), qft::Error);
  // A token id outside the model's vocabulary names the data file and line.
  {
    std::ofstream out(dir_ / "bad.jsonl");
    out << "{\"input_ids\": [1, 2], \"labels\": [1, 2]}\n{\"input_ids\": [1, 999], \"labels\": [1, 2]}\n";
  }
  try {
    run_training(config(dir_ / "y", {"training.max_steps=1", "data.pretokenized=" + (dir_ / "bad.jsonl")}));
    ADD_FAILURE() << "out-of-vocabulary ids were accepted";
  } catch (const qft::Error& e) {
    EXPECT_CONTAINS(e.what(), "bad.jsonl:2");
  }
  // A finished run is not silently overwritten; overwrite_output_dir replaces it.
  const std::vector<std::string> one_step = {"training.max_steps=1", "training.per_device_train_batch_size=8"};
  run_training(config(dir_ / "z", one_step));
  try {
    run_training(config(dir_ / "z", one_step));
    ADD_FAILURE() << "a second run into a finished output_dir was accepted";
  } catch (const qft::Error& e) {
    EXPECT_CONTAINS(e.what(), "overwrite_output_dir");
  }
  std::vector<std::string> overwrite = one_step;
  overwrite.push_back("output.overwrite_output_dir=true");
  EXPECT_NO_THROW(run_training(config(dir_ / "z", overwrite)));
}

TEST_F(TrainE2E, LongContextKeysAreCheckedAtStart) {
  auto error = [&](const std::vector<std::string>& overrides) {
    return error_of([&] { run_training(config(dir_ / "refused", overrides)); });
  };
  EXPECT_CONTAINS(error({"training.tiled_mlp=maybe"}), "tiled_mlp");
  EXPECT_CONTAINS(error({"training.tiled_mlp=true", "training.tiled_mlp_num_shards=-2"}),
                  "tiled_mlp_num_shards' must be a positive number of chunks, or 0");
  EXPECT_CONTAINS(error({"training.tiled_mlp_num_shards=4"}), "tiled_mlp_num_shards applies only with tiled_mlp: true");
  EXPECT_CONTAINS(error({"training.activation_offloading=true"}),
                  "activation_offloading moves the layer inputs that gradient checkpointing keeps");
  EXPECT_CONTAINS(error({"training.activation_offloading=true", "training.gradient_checkpointing=true",
                         "training.recompute_granularity=selective"}),
                  "gradient_checkpointing: true with recompute_granularity: full");
  EXPECT_CONTAINS(error({"training.gradient_checkpointing=true", "training.activation_offloading_layers=1"}),
                  "activation_offloading_layers applies only with activation_offloading: true");
  const std::vector<std::string> offload = {"training.gradient_checkpointing=true",
                                            "training.activation_offloading=true"};
  auto with = [&](std::vector<std::string> v, const std::string& o) {
    v.push_back(o);
    return v;
  };
  EXPECT_CONTAINS(error(with(offload, "training.activation_offloading_layers=0")),
                  "activation_offloading_layers' must be a positive number of layers, or -1 (all)");
  // The tiny model has 2 layers: known once it is loaded, before anything is written.
  EXPECT_CONTAINS(error(with(offload, "training.activation_offloading_layers=3")),
                  "training.activation_offloading_layers is 3, but the model has 2 layers");
  // recompute_num_layers: with full recompute only, at most the model's layers, and offloading only the
  // layers it checkpoints.
  EXPECT_CONTAINS(error({"training.recompute_num_layers=1"}),
                  "recompute_num_layers picks how many layers full recompute checkpoints");
  EXPECT_CONTAINS(error({"training.gradient_checkpointing=true", "training.recompute_granularity=selective",
                         "training.recompute_num_layers=1"}),
                  "gradient_checkpointing: true with recompute_granularity: full");
  EXPECT_CONTAINS(error({"training.gradient_checkpointing=true", "training.recompute_num_layers=-2"}),
                  "recompute_num_layers' must be a number of layers (0 or more), or -1 (all)");
  EXPECT_CONTAINS(error({"training.gradient_checkpointing=true", "training.recompute_num_layers=3"}),
                  "training.recompute_num_layers is 3, but the model has 2 layers");
  EXPECT_CONTAINS(
      error(with(with(offload, "training.recompute_num_layers=1"), "training.activation_offloading_layers=2")),
      "training.activation_offloading_layers is 2, but training.recompute_num_layers checkpoints only 1 layers");
  EXPECT_CONTAINS(error({"training.checkpoint_residuals=true"}),
                  "checkpoint_residuals keeps a second tensor per checkpointed layer: it needs "
                  "gradient_checkpointing: true with recompute_granularity: full");
  EXPECT_FALSE(fs::exists(fs::path(dir_ / "refused") / "trainer_log.jsonl"));
  EXPECT_CONTAINS(error({"training.tiled_mlps=true"}), "did you mean 'tiled_mlp'?");
}

}  // namespace
