// Unit tests of the trainer's parts: LR schedules, AdamW, clipping, config reading, target modules,
// data plan, pretokenized rows, PEFT adapter files, merge and init-model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>

#include "core/error.h"
#include "core/files.h"
#include "io/safetensors.h"
#include "model/qwen3_model.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/flat_parameters.h"
#include "train/data_plan.h"
#include "hf/model_dir.h"
#include "hf/init_model.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"
#include "train/memory_plan.h"
#include "hf/merge.h"
#include "hf/peft_adapter.h"
#include "train/pretokenized.h"
#include "core/remove_tree.h"
#include "train_test_support.h"
#include "model/lora_targets.h"
#include "train/train_config.h"

namespace {

namespace fs = std::filesystem;
using namespace qft;
using namespace qft::train;
using namespace qft::hf;
using qft::model::resolve_target_modules;
using qft::model::resolve_target_modules_json;
using namespace qft::train::testing;

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

// A small Qwen3 shape: GQA (4 heads over 2 kv heads), untied, vocab 128.
model::Qwen3Config small_config(bool tied = false) {
  nlohmann::json j = {{"architectures", {"Qwen3ForCausalLM"}},
                      {"model_type", "qwen3"},
                      {"vocab_size", 128},
                      {"hidden_size", 32},
                      {"intermediate_size", 64},
                      {"num_hidden_layers", 2},
                      {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},
                      {"head_dim", 8},
                      {"rms_norm_eps", 1e-6},
                      {"rope_theta", 1000000.0},
                      {"max_position_embeddings", 512},
                      {"tie_word_embeddings", tied},
                      {"torch_dtype", "float32"}};
  return model::Qwen3Config::from_json(j, "small_config");
}

// ---- learning-rate schedules (transformers/optimization.py formulas, values worked out by hand) ----

TEST(LrSchedule, LinearWarmupThenDecayToZero) {
  LrSchedule s("linear", 2.0, /*warmup=*/2, /*total=*/10);
  EXPECT_DOUBLE_EQ(s.lambda(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lambda(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lambda(2), 1.0);
  EXPECT_DOUBLE_EQ(s.lambda(5), 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.lambda(9), 1.0 / 8.0);
  EXPECT_DOUBLE_EQ(s.lambda(10), 0.0);
  EXPECT_DOUBLE_EQ(s.lambda(12), 0.0);
  EXPECT_DOUBLE_EQ(s.learning_rate(5), 2.0 * 5.0 / 8.0);
}

TEST(LrSchedule, CosineHalfCycle) {
  LrSchedule s("cosine", 1.0, 2, 10);
  EXPECT_DOUBLE_EQ(s.lambda(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lambda(2), 1.0);
  EXPECT_NEAR(s.lambda(4), 0.5 * (1.0 + std::sqrt(0.5)), 1e-15);  // progress 1/4: cos(pi/4)
  EXPECT_NEAR(s.lambda(6), 0.5, 1e-15);                             // progress 1/2
  EXPECT_NEAR(s.lambda(10), 0.0, 1e-15);
  LrSchedule no_warmup("cosine", 1.0, 0, 4);
  EXPECT_DOUBLE_EQ(no_warmup.lambda(0), 1.0);
  EXPECT_NEAR(no_warmup.lambda(2), 0.5, 1e-15);
}

TEST(LrSchedule, ConstantIgnoresWarmupAndConstantWithWarmupRamps) {
  LrSchedule constant("constant", 3e-4, 5, 10);
  EXPECT_DOUBLE_EQ(constant.learning_rate(0), 3e-4);
  EXPECT_DOUBLE_EQ(constant.learning_rate(9), 3e-4);
  LrSchedule ramp("constant_with_warmup", 1.0, 4, 10);
  EXPECT_DOUBLE_EQ(ramp.lambda(0), 0.0);
  EXPECT_DOUBLE_EQ(ramp.lambda(1), 0.25);
  EXPECT_DOUBLE_EQ(ramp.lambda(3), 0.75);
  EXPECT_DOUBLE_EQ(ramp.lambda(4), 1.0);
  EXPECT_DOUBLE_EQ(ramp.lambda(100), 1.0);
}

TEST(LrSchedule, WarmupStepsAsHuggingFace) {
  EXPECT_EQ(LrSchedule::warmup_steps_for(5, 0.5, 100), 5);  // explicit steps win
  EXPECT_EQ(LrSchedule::warmup_steps_for(0, 0.1, 25), 3);   // ceil(2.5)
  EXPECT_EQ(LrSchedule::warmup_steps_for(0, 0.0, 25), 0);
  // Python: math.ceil(100 * 0.07) == 8 because 100 * 0.07 == 7.000000000000001.
  EXPECT_EQ(LrSchedule::warmup_steps_for(0, 0.07, 100), 8);
}

// ---- AdamW and clipping ----

TEST(AdamW, MatchesTheTextbookFormulaInDouble) {
  const double lr = 1e-2, beta1 = 0.9, beta2 = 0.99, eps = 1e-8, wd = 0.1;
  at::manual_seed(3);
  const at::Tensor p0 = at::randn({5, 3});
  const at::Tensor q0 = at::randn({4});
  // Two tensors in one flat buffer; weight decay on "p" only.
  FlatParameters flat({{"p", p0}, {"q", q0}}, at::kCPU, [](const std::string& name) { return name == "p"; });
  const qft::parallel::Range all{0, flat.numel()};
  AdamW optimizer({beta1, beta2, eps, wd}, all, flat.no_decay_ranges(all), at::kCPU);

  at::Tensor p = p0.to(at::kDouble), q = q0.to(at::kDouble);
  at::Tensor mp = at::zeros_like(p), vp = at::zeros_like(p), mq = at::zeros_like(q), vq = at::zeros_like(q);
  for (int t = 1; t <= 4; ++t) {
    const at::Tensor gp = at::randn({5, 3}), gq = at::randn({4}) * 10;
    const double step_lr = lr * t;  // a different rate every step, as a schedule gives
    flat.grad(0).copy_(gp);
    flat.grad(1).copy_(gq);
    optimizer.step(flat.params(), flat.grads(), step_lr);
    auto reference = [&](at::Tensor& x, at::Tensor& m, at::Tensor& v, const at::Tensor& g32, bool decay) {
      const at::Tensor g = g32.to(at::kDouble);
      if (decay) x = x * (1 - step_lr * wd);
      m = beta1 * m + (1 - beta1) * g;
      v = beta2 * v + (1 - beta2) * g * g;
      const at::Tensor m_hat = m / (1 - std::pow(beta1, t));
      const at::Tensor v_hat = v / (1 - std::pow(beta2, t));
      x = x - step_lr * m_hat / (v_hat.sqrt() + eps);
    };
    reference(p, mp, vp, gp, true);
    reference(q, mq, vq, gq, false);
    const at::Tensor exp_avg_sq_p = optimizer.exp_avg_sq().narrow(0, 0, 15).view({5, 3});
    EXPECT_TRUE(at::allclose(flat.param(0).to(at::kDouble), p, 1e-6, 1e-6)) << "step " << t;
    EXPECT_TRUE(at::allclose(flat.param(1).to(at::kDouble), q, 1e-6, 1e-6)) << "step " << t;
    EXPECT_TRUE(at::allclose(exp_avg_sq_p.to(at::kDouble), vp, 1e-6, 1e-9));
  }
  EXPECT_EQ(optimizer.step_count(), 4);
  // Without decay on q, the first step moves every element by about lr (m_hat / sqrt(v_hat) = sign).
}

TEST(AdamW, FirstStepMovesEachElementByTheLearningRate) {
  FlatParameters flat({{"w", at::zeros({3})}}, at::kCPU, [](const std::string&) { return true; });
  AdamW optimizer({0.9, 0.999, 1e-8, 0.0}, {0, 3}, {}, at::kCPU);
  flat.grad(0).copy_(at::tensor({2.0f, -0.5f, 1e-3f}));
  optimizer.step(flat.params(), flat.grads(), 0.1);
  const at::Tensor expected = at::tensor({-0.1f, 0.1f, -0.1f});
  EXPECT_TRUE(at::allclose(flat.param(0), expected, 1e-4, 1e-5)) << flat.param(0);
}

TEST(ClipGradNorm, ScalesAllGradientsByOneCoefficient) {
  at::Tensor a = at::tensor({3.0f, 0.0f}), b = at::tensor({4.0f});
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0).item<double>(), 5.0, 1e-6);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a[0].item<double>(), 3.0 * coef, 1e-6);
  EXPECT_NEAR(b[0].item<double>(), 4.0 * coef, 1e-6);
  at::Tensor c = at::tensor({0.3f}), d = at::tensor({0.4f});
  EXPECT_NEAR(clip_grad_norm({c, d}, 1.0).item<double>(), 0.5, 1e-6);  // below the limit: unchanged
  EXPECT_FLOAT_EQ(c[0].item<float>(), 0.3f);
  at::Tensor e = at::tensor({30.0f, 40.0f});
  EXPECT_NEAR(clip_grad_norm({e}, 0.0).item<double>(), 50.0, 1e-4);  // max_norm 0: measure only
  EXPECT_FLOAT_EQ(e[1].item<float>(), 40.0f);
}

// ---- fp16 loss scaling (the sequence against torch itself: tests/reference/test_fp16_loss_scaling.py) ----

TEST(LossScaler, BacksOffOnOverflowGrowsAfterTheIntervalAndCountsSkips) {
  LossScaler scaler({8.0, 2.0, 0.5, 2});
  EXPECT_FLOAT_EQ(scaler.inverse_scale(), 0.125f);
  scaler.update(true);  // 4, skipped
  scaler.update(false);
  EXPECT_FLOAT_EQ(scaler.scale(), 4.0f);
  EXPECT_EQ(scaler.growth_tracker(), 1);
  scaler.update(false);  // the second clean step in a row: grows
  EXPECT_FLOAT_EQ(scaler.scale(), 8.0f);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  scaler.update(false);
  scaler.update(true);  // an overflow resets the tracker
  EXPECT_FLOAT_EQ(scaler.scale(), 4.0f);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_EQ(scaler.skipped_steps(), 2);
  EXPECT_FLOAT_EQ(LossScaler().scale(), 65536.0f);  // torch's init_scale 2**16
}

TEST(LossScaler, StateRoundTripsThroughACheckpointAndBadStateIsNamed) {
  LossScaler scaler({1024.0, 2.0, 0.5, 3});
  scaler.update(true);
  scaler.update(false);
  TrainerState state;
  state.loss_scaler = scaler.to_json();
  const TrainerState back = TrainerState::from_json(state.to_json(), "trainer_state.json");
  LossScaler restored;
  restored.restore(back.loss_scaler, "trainer_state.json");
  EXPECT_FLOAT_EQ(restored.scale(), 512.0f);
  EXPECT_EQ(restored.growth_tracker(), 1);
  EXPECT_EQ(restored.skipped_steps(), 1);

  // Checkpoints of runs without a scaler (bf16/fp32, or written before it existed) have no such key.
  nlohmann::json old = TrainerState().to_json();
  EXPECT_FALSE(old.contains("loss_scaler"));
  EXPECT_TRUE(TrainerState::from_json(old, "old.json").loss_scaler.is_null());

  EXPECT_CONTAINS(error_of([&] { restored.restore({{"scale", -1.0}, {"growth_tracker", 0}, {"skipped_steps", 0}}, "c/ts.json"); }),
                  "c/ts.json: \"loss_scaler.scale\" must be a positive finite number");
  EXPECT_CONTAINS(error_of([&] { restored.restore({{"scale", 2.0}, {"growth_tracker", 0}}, "c/ts.json"); }),
                  "c/ts.json: \"loss_scaler\" has no \"skipped_steps\"");
  EXPECT_CONTAINS(error_of([&] { restored.restore({{"scale", 2.0}, {"growth_tracker", 1.5}, {"skipped_steps", 0}}, "x"); }),
                  "\"loss_scaler.growth_tracker\" must be a non-negative integer");
}

// ---- config ----

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_ / "model");
    write_text(dir_ / "model/config.json", "{}");
    write_text(dir_ / "data.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1, 2]}\n");
  }
  // A valid config with `extra` appended to the training section.
  std::string yaml(const std::string& training_extra = "", const std::string& lora = "  r: 4\n") const {
    return "model:\n  model_name_or_path: " + (dir_ / "model") + "\nlora:\n" + lora + "data:\n  pretokenized: " +
           (dir_ / "data.jsonl") + "\ntraining:\n  learning_rate: 1e-3\n" + training_extra +
           "output:\n  output_dir: " + (dir_ / "out") + "\n";
  }
  std::string load_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
    write_text(dir_ / "cfg.yaml", text);
    return error_of([&] { load_train_config(dir_ / "cfg.yaml", overrides); });
  }
  TempDir dir_;
};

TEST_F(ConfigTest, ReadsValuesAndDefaults) {
  write_text(dir_ / "cfg.yaml", yaml("  lr_scheduler_type: cosine\n  warmup_ratio: 0.1\n  shuffle: false\n",
                                     "  r: 16\n  lora_alpha: 32\n  target_modules: all-linear\n"));
  const TrainConfig c = load_train_config(dir_ / "cfg.yaml");
  EXPECT_EQ(c.lora.r, 16);
  EXPECT_DOUBLE_EQ(c.lora.lora_alpha, 32.0);
  EXPECT_EQ(c.lora.target_modules, std::vector<std::string>{"all-linear"});
  EXPECT_EQ(c.training.lr_scheduler_type, "cosine");
  EXPECT_DOUBLE_EQ(c.training.learning_rate, 1e-3);
  EXPECT_FALSE(c.training.shuffle);
  EXPECT_EQ(c.training.per_device_train_batch_size, 8);
  EXPECT_EQ(c.training.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.model.torch_dtype, "auto");
  EXPECT_EQ(c.finetuning_type, FinetuningType::lora);
}

TEST_F(ConfigTest, UnknownKeySuggestsTheClosestWithFileAndLine) {
  const std::string e = load_error(yaml("  learning_rat: 0.1\n"));
  EXPECT_CONTAINS(e, "cfg.yaml:");
  EXPECT_CONTAINS(e, "training.learning_rat");
  EXPECT_CONTAINS(e, "did you mean 'learning_rate'");
}

TEST_F(ConfigTest, WrongTypeNamesFileLineAndKey) {
  const std::string e = load_error(yaml("  per_device_train_batch_size: two\n"));
  EXPECT_CONTAINS(e, "cfg.yaml:9");
  EXPECT_CONTAINS(e, "training.per_device_train_batch_size");
  EXPECT_CONTAINS(e, "integer");
}

TEST_F(ConfigTest, MissingModelPath) {
  const std::string e = load_error("model:\n  torch_dtype: bf16\n");
  EXPECT_CONTAINS(e, "missing required key 'model.model_name_or_path'");
  const std::string missing_dir = load_error("model:\n  model_name_or_path: /nonexistent/qft-model\n");
  EXPECT_CONTAINS(missing_dir, "/nonexistent/qft-model");
  EXPECT_CONTAINS(missing_dir, "does not exist");
}

TEST_F(ConfigTest, SchedulerTypoSuggestsCosine) {
  const std::string e = load_error(yaml("  lr_scheduler_type: cosin\n"));
  EXPECT_CONTAINS(e, "training.lr_scheduler_type");
  EXPECT_CONTAINS(e, "did you mean 'cosine'");
}

TEST_F(ConfigTest, ResolvedYamlLoadsBackToTheSameConfig) {
  write_text(dir_ / "cfg.yaml", yaml("  lr_scheduler_type: cosine\n  adam_epsilon: 1.0e-5\n"));
  const TrainConfig config = load_train_config(dir_ / "cfg.yaml", {"training.learning_rate=3e-4"});
  const std::string resolved = config.resolved_yaml();
  EXPECT_CONTAINS(resolved, "adam_epsilon: 1.0e-05");  // a float for YAML 1.1 readers too
  EXPECT_CONTAINS(resolved, "learning_rate: 0.0003");
  write_text(dir_ / "resolved.yaml", resolved);
  EXPECT_EQ(load_train_config(dir_ / "resolved.yaml").to_json(), config.to_json());
  // The long-context keys that apply only with their switch are written only with it.
  EXPECT_EQ(resolved.find("tiled_mlp_num_shards"), std::string::npos);
  EXPECT_EQ(resolved.find("activation_offloading_layers"), std::string::npos);
  EXPECT_EQ(resolved.find("recompute_num_layers"), std::string::npos);
  const TrainConfig long_context = load_train_config(
      dir_ / "cfg.yaml", {"training.learning_rate=3e-4", "training.tiled_mlp=true", "training.tiled_mlp_num_shards=4",
                          "training.gradient_checkpointing=true", "training.activation_offloading=true",
                          "training.activation_offloading_layers=2", "training.recompute_num_layers=3",
                          "training.checkpoint_residuals=true"});
  write_text(dir_ / "resolved_long.yaml", long_context.resolved_yaml());
  const TrainConfig back = load_train_config(dir_ / "resolved_long.yaml");
  EXPECT_EQ(back.to_json(), long_context.to_json());
  EXPECT_EQ(back.training.tiled_mlp_num_shards, 4);
  EXPECT_EQ(back.training.activation_offloading_layers, 2);
  EXPECT_EQ(back.training.recompute_num_layers, 3);
  EXPECT_TRUE(back.training.checkpoint_residuals);
  // None of them changes the math: a resume may switch them.
  EXPECT_EQ(long_context.math_fingerprint(), config.math_fingerprint());
}

TEST_F(ConfigTest, BadValuesAndUnsupportedChoices) {
  EXPECT_CONTAINS(load_error(yaml("  gradient_accumulation_steps: 0\n")), "gradient_accumulation_steps");
  EXPECT_CONTAINS(load_error(yaml("", "  lora_dropout: 1.5\n")), "lora.lora_dropout");
  EXPECT_CONTAINS(load_error(yaml("", "  target_modules: [q_proj, v_prj]\n")), "did you mean 'v_proj'");
  EXPECT_CONTAINS(load_error(yaml("", "  init_lora_weights: pissa\n")), "lora.init_lora_weights");
  EXPECT_EQ(load_error(yaml() + "  report_to: tensorboard\n"), "");
  EXPECT_CONTAINS(load_error(yaml() + "  report_to: wandb\n"), "output.report_to");
  EXPECT_CONTAINS(load_error(yaml() + "extra_section: {}\n"), "unknown key 'extra_section'");
  // overwrite_output_dir would delete the model's files.
  EXPECT_CONTAINS(load_error(yaml(), {"output.output_dir=" + (dir_ / "model/")}), "is the input directory");
}

TEST_F(ConfigTest, OverridesAreValidatedLikeTheFile) {
  write_text(dir_ / "cfg.yaml", yaml());
  const TrainConfig c =
      load_train_config(dir_ / "cfg.yaml", {"training.learning_rate=0.5", "lora.target_modules=[q_proj, o_proj]"});
  EXPECT_DOUBLE_EQ(c.training.learning_rate, 0.5);
  EXPECT_EQ(c.lora.target_modules, (std::vector<std::string>{"q_proj", "o_proj"}));
  EXPECT_CONTAINS(load_error(yaml(), {"training.max_step=3"}), "did you mean 'max_steps'");
  EXPECT_CONTAINS(load_error(yaml(), {"training.lr_scheduler_type=cosin"}),
                  "(set by --override training.lr_scheduler_type=cosin)");
  EXPECT_CONTAINS(load_error(yaml(), {"training.max_steps"}), "section.key=value");
}

TEST_F(ConfigTest, HashCoversMathButNotRunLength) {
  write_text(dir_ / "cfg.yaml", yaml());
  const uint64_t base = load_train_config(dir_ / "cfg.yaml").hash();
  EXPECT_EQ(load_train_config(dir_ / "cfg.yaml", {"training.max_steps=7", "training.logging_steps=3"}).hash(), base);
  EXPECT_NE(load_train_config(dir_ / "cfg.yaml", {"training.learning_rate=2e-3"}).hash(), base);
  EXPECT_NE(load_train_config(dir_ / "cfg.yaml", {"training.seed=1"}).hash(), base);
}

// ---- target modules ----

TEST(TargetModules, NamesAllLinearAndRegex) {
  using model::Projection;
  EXPECT_EQ(resolve_target_modules({"all-linear"}, 3).size(), 7u);
  EXPECT_EQ(resolve_target_modules({"v_proj", "q_proj"}, 3), (std::vector<Projection>{Projection::q, Projection::v}));
  EXPECT_EQ(resolve_target_modules({"mlp.down_proj"}, 3), std::vector<Projection>{Projection::down});
  EXPECT_EQ(resolve_target_modules({R"(.*\.(q|v)_proj)"}, 3), (std::vector<Projection>{Projection::q, Projection::v}));
  EXPECT_CONTAINS(error_of([] { resolve_target_modules({R"(model\.layers\.0\..*_proj)"}, 3); }), "1 of 3 layers");
  EXPECT_CONTAINS(error_of([] { resolve_target_modules({"lm_head", "q_proj"}, 3); }), "lm_head");
  const std::string json_error = error_of([] {
    resolve_target_modules_json(nlohmann::json::array({"q_proj", "embed_tokens"}), 2, "a/adapter_config.json");
  });
  EXPECT_CONTAINS(json_error, "a/adapter_config.json");
  EXPECT_CONTAINS(json_error, "embed_tokens");
  // A JSON string is a regex (PEFT): "q_proj" alone matches no full module path.
  EXPECT_CONTAINS(error_of([] { resolve_target_modules_json("q_proj", 2, "x.json"); }), "matches none");
}

// ---- checkpoint shards ----

TEST(OptimizerShards, ResumeReshardsEntryByEntryAndRefusesIncompleteOrForeignState) {
  TempDir dir;
  auto entry = [](const std::string& name, std::vector<int64_t> shape, int64_t begin) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return FlatParameters::Entry{name, shape, parallel::Range{begin, begin + n}, true};
  };
  // Written by 3 ZeRO-1 ranks: a [2, 3] then b [5] (11 elements, padded to 12, shards [0, 4), [4, 8), [8, 12)).
  const std::vector<FlatParameters::Entry> old_entries = {entry("a", {2, 3}, 0), entry("b", {5}, 6)};
  const at::Tensor m = at::arange(12, at::kFloat), v = m * 10, masters = m * 100;
  for (int d = 0; d < 3; ++d) {
    ShardLayout layout;
    layout.world_size = layout.data_parallel_size = 3;
    layout.data_parallel_rank = d;
    layout.zero_stage = 1;
    layout.step = 7;
    layout.flat_numel = 12;
    layout.owned = parallel::Range{4 * d, 4 * d + 4};
    layout.with_masters = true;
    layout.entries = old_entries;
    write_optimizer_shard(dir / ("c/" + optimizer_shard_path(d, 0)), layout, m.narrow(0, 4 * d, 4),
                          v.narrow(0, 4 * d, 4), masters.narrow(0, 4 * d, 4));
  }
  // Read back in another layout: b first, then a, padded to 15 and cut in 3 (another order and padding,
  // the new ranges of b and a straddling old shards). Element k of entry b is old flat index 6 + k.
  const std::vector<FlatParameters::Entry> new_entries = {entry("b", {5}, 0), entry("a", {2, 3}, 5)};
  std::vector<float> expected_m(15, 0.0f);
  for (int k = 0; k < 5; ++k) expected_m[k] = 6.0f + k;
  for (int k = 0; k < 6; ++k) expected_m[5 + k] = static_cast<float>(k);
  for (int r = 0; r < 3; ++r) {
    const parallel::Range owned{5 * r, 5 * r + 5};
    at::Tensor got_m = at::zeros({5}), got_v = at::zeros({5}), got_masters = at::full({5}, -1.0f);
    EXPECT_EQ(read_optimizer_shards(dir / "c", 0, 1, new_entries, owned, got_m, got_v, got_masters), 7);
    for (int i = 0; i < 5; ++i) {
      const int64_t flat = owned.begin + i;
      const bool padding = flat >= 11;
      EXPECT_EQ(got_m[i].item<float>(), expected_m[flat]) << "flat " << flat;
      EXPECT_EQ(got_v[i].item<float>(), 10 * expected_m[flat]) << "flat " << flat;
      EXPECT_EQ(got_masters[i].item<float>(), padding ? -1.0f : 100 * expected_m[flat]) << "flat " << flat;
    }
  }
  at::Tensor x = at::zeros({5}), y = at::zeros({5}), none;
  const parallel::Range first{0, 5};
  EXPECT_CONTAINS(error_of([&] { read_optimizer_shards(dir / "c", 0, 2, new_entries, first, x, y, none); }),
                  "written with distributed.tensor_parallel_size 1, this run has 2");
  EXPECT_CONTAINS(error_of([&] {
                    read_optimizer_shards(dir / "c", 0, 1, {entry("b", {5}, 0), entry("a", {3, 2}, 5)}, {5, 10}, x, y,
                                          none);
                  }),
                  "\"a\" is [2, 3] in the checkpoint, [3, 2] in this run");
  EXPECT_CONTAINS(error_of([&] { read_optimizer_shards(dir / "c", 0, 1, {entry("b", {5}, 0)}, first, x, y, none); }),
                  "state for \"a\", which this run does not train");
  fs::remove(dir / ("c/" + optimizer_shard_path(1, 0)));
  EXPECT_CONTAINS(error_of([&] { read_optimizer_shards(dir / "c", 0, 1, new_entries, first, x, y, none); }),
                  "2 optimizer shards of tensor-parallel rank 0, expected 3");
}

// ---- data plan and rows ----

TEST(DataPlan, FileOrderAccumulationAndRanks) {
  DataPlan plan(/*rows=*/10, /*micro=*/2, /*accumulation=*/2, /*world=*/1, /*shuffle=*/false, false, 42);
  EXPECT_EQ(plan.micro_batches_per_epoch(), 5);
  EXPECT_EQ(plan.steps_per_epoch(), 3);
  EXPECT_EQ(plan.micro_batches(0, 0), (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}}));
  EXPECT_EQ(plan.micro_batches(2, 0), (std::vector<std::vector<int64_t>>{{8, 9}}));  // short last group
  EXPECT_EQ(plan.micro_batches(3, 0), (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}}));  // epoch 2
  EXPECT_DOUBLE_EQ(plan.epoch_after(0), 0.4);
  EXPECT_DOUBLE_EQ(plan.epoch_after(1), 0.8);
  EXPECT_DOUBLE_EQ(plan.epoch_after(2), 1.0);
  EXPECT_DOUBLE_EQ(plan.epoch_after(3), 1.4);

  DataPlan two_ranks(7, 1, 2, 2, false, false, 0);  // 4 micro-batches per step
  EXPECT_EQ(two_ranks.micro_batches(0, 0), (std::vector<std::vector<int64_t>>{{0}, {2}}));
  EXPECT_EQ(two_ranks.micro_batches(0, 1), (std::vector<std::vector<int64_t>>{{1}, {3}}));
  EXPECT_EQ(two_ranks.micro_batches(1, 1), (std::vector<std::vector<int64_t>>{{5}}));

  DataPlan drop(5, 2, 1, 1, false, /*drop_last=*/true, 0);
  EXPECT_EQ(drop.micro_batches_per_epoch(), 2);
}

TEST(DataPlan, AStepHasTheSameRowsHoweverItsBatchIsSplitOverRanks) {
  // A resume may trade gradient accumulation for data-parallel ranks (same global batch): every step
  // must then see the same rows, including the short last step of an epoch and the epochs after.
  const int64_t rows = 29, micro = 2, global = 4;  // 15 micro-batches, 4 steps per epoch
  auto step_rows = [&](const DataPlan& plan, int64_t world, int64_t step) {
    std::vector<int64_t> out;
    for (int rank = 0; rank < world; ++rank) {
      for (const auto& batch : plan.micro_batches(step, rank)) out.insert(out.end(), batch.begin(), batch.end());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  const DataPlan one(rows, micro, global, 1, /*shuffle=*/true, false, 11);
  for (int64_t world : {2, 4}) {
    const DataPlan split(rows, micro, global / world, world, true, false, 11);
    ASSERT_EQ(split.steps_per_epoch(), one.steps_per_epoch());
    for (int64_t step = 0; step < 3 * one.steps_per_epoch(); ++step) {
      EXPECT_EQ(step_rows(split, world, step), step_rows(one, 1, step)) << "world " << world << " step " << step;
      EXPECT_DOUBLE_EQ(split.epoch_after(step), one.epoch_after(step));
    }
  }
  EXPECT_EQ(step_rows(one, 1, 3).size(), 5u);  // the short last step: 29 - 3 * 8 rows, in 3 micro-batches
}

TEST(DataPlan, ShuffleIsASeededPermutationPerEpoch) {
  DataPlan a(50, 5, 1, 1, true, false, 7), b(50, 5, 1, 1, true, false, 7), c(50, 5, 1, 1, true, false, 8);
  EXPECT_EQ(a.row_order(0), b.row_order(0));
  EXPECT_NE(a.row_order(0), a.row_order(1));
  EXPECT_NE(a.row_order(0), c.row_order(0));
  std::vector<int64_t> sorted = a.row_order(3);
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(sorted[i], i);
}

TEST(Pretokenized, ReadsRowsAndNamesBadLines) {
  TempDir dir;
  write_text(dir / "ok.jsonl",
             "{\"input_ids\": [5, 6, 7], \"labels\": [-100, 6, 7]}\n\n"
             "{\"input_ids\": [1, 2, 3, 4], \"labels\": [1, 2, -100, 4], \"segment_ids\": [0, 0, 1, 1]}\n");
  const auto rows = read_pretokenized_jsonl(dir / "ok.jsonl", 10, 64);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0].target_tokens, 2);
  EXPECT_EQ(rows[1].target_tokens, 2);
  EXPECT_EQ(rows[1].position_ids, (std::vector<int64_t>{0, 1, 0, 1}));

  const model::Batch batch = collate_rows({&rows[0], &rows[1]});
  EXPECT_EQ(batch.input_ids.sizes(), (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(batch.segment_ids[0][3].item<int64_t>(), -1);  // padding
  EXPECT_EQ(batch.labels[0][3].item<int64_t>(), -100);
  EXPECT_EQ(batch.position_ids[1][2].item<int64_t>(), 0);

  write_text(dir / "bad.jsonl", "{\"input_ids\": [1], \"labels\": [1]}\n{\"input_ids\": [1, 99], \"labels\": [1, 2]}\n");
  const std::string e = error_of([&] { read_pretokenized_jsonl(dir / "bad.jsonl", 10, 64); });
  EXPECT_CONTAINS(e, "bad.jsonl:2");
  EXPECT_CONTAINS(e, "input_ids[1] = 99");
  write_text(dir / "short.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1]}\n");
  EXPECT_CONTAINS(error_of([&] { read_pretokenized_jsonl(dir / "short.jsonl", 10, 64); }), "short.jsonl:1");
  // Longer than max_position_embeddings, by length or by position: refused before anything is sized by it.
  write_text(dir / "long.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [1, 2, 3]}\n");
  EXPECT_CONTAINS(error_of([&] { read_pretokenized_jsonl(dir / "long.jsonl", 10, 2); }),
                  "long.jsonl:1: the row has 3 tokens but the model takes at most 2 (max_position_embeddings");
  write_text(dir / "far.jsonl", "{\"input_ids\": [1, 2], \"labels\": [1, 2], \"position_ids\": [0, 5000]}\n");
  EXPECT_CONTAINS(error_of([&] { read_pretokenized_jsonl(dir / "far.jsonl", 10, 64); }),
                  "far.jsonl:1: position_ids[1] = 5000 is outside [0, 64)");
  // Nested too deep for any parser's stack: a located error, not a crash.
  write_text(dir / "deep.jsonl", std::string(200000, '[') + "\n");
  EXPECT_CONTAINS(error_of([&] { read_pretokenized_jsonl(dir / "deep.jsonl", 10, 64); }),
                  "deep.jsonl:1: line 1 column 513: malformed JSON: nested deeper than 512 levels");
}

TEST(ByteSizes, DecimalAndBinaryUnits) {
  EXPECT_EQ(parse_byte_size("5GB", "x"), 5000000000ULL);
  EXPECT_EQ(parse_byte_size("2MiB", "x"), 2097152ULL);
  EXPECT_EQ(parse_byte_size("1000", "x"), 1000ULL);
  EXPECT_CONTAINS(error_of([] { parse_byte_size("5 parsecs", "merge --max-shard-size"); }), "--max-shard-size");
}

// ---- PEFT adapter files ----

model::LoraWeights random_lora(const model::Qwen3Config& config, std::vector<model::Projection> targets,
                               double alpha = 8.0) {
  model::LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = alpha;
  lc.target_modules = std::move(targets);
  model::LoraWeights lora = model::LoraWeights::init(config, lc, 11, at::kCPU, model::LoraInit::kaiming_uniform);
  at::manual_seed(5);
  for (auto& layer : lora.layers)
    for (auto& pair : layer)
      if (pair.defined()) pair.B = at::randn(pair.B.sizes()) * 0.1;  // PEFT inits B to zero; make it visible
  return lora;
}

TEST(PeftAdapter, SaveWritesPeftFilesAndLoadsBack) {
  using model::Projection;
  const model::Qwen3Config config = small_config();
  const model::LoraWeights lora = random_lora(config, {Projection::v, Projection::q, Projection::down}, 8.0);
  TempDir dir;
  save_peft_adapter(dir / "adapter", lora, "/models/base", "true");

  const std::string text = read_file(dir / "adapter/adapter_config.json");
  EXPECT_EQ(text.rfind("{\n  \"alora_invocation_tokens\": null,\n  \"alpha_pattern\": {},\n", 0), 0u) << text;
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["peft_type"], "LORA");
  EXPECT_EQ(j["task_type"], "CAUSAL_LM");
  EXPECT_EQ(j["r"], 4);
  EXPECT_TRUE(j["lora_alpha"].is_number_integer());
  EXPECT_EQ(j["lora_alpha"], 8);
  EXPECT_EQ(j["target_modules"], nlohmann::json({"down_proj", "q_proj", "v_proj"}));
  EXPECT_EQ(j["inference_mode"], true);
  EXPECT_EQ(j["base_model_name_or_path"], "/models/base");
  EXPECT_EQ(j["bias"], "none");
  EXPECT_EQ(j["use_rslora"], false);
  EXPECT_EQ(j.size(), 36u);  // the key set of a PEFT 0.18.1 file (formats.md §3.2)
  // Keys appear sorted in the text, as json.dumps(sort_keys=True) writes them.
  std::vector<std::string> keys_in_text;
  for (const auto& item : j.items()) keys_in_text.push_back(item.key());
  EXPECT_TRUE(std::is_sorted(keys_in_text.begin(), keys_in_text.end()));

  io::SafetensorsFile file(dir / "adapter/adapter_model.safetensors");
  EXPECT_EQ(file.names().size(), 2u * 3u * 2u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  const auto& a = file.info("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(a.dtype, "F32");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{4, 32}));
  EXPECT_EQ(file.info("base_model.model.model.layers.0.mlp.down_proj.lora_B.weight").shape,
            (std::vector<int64_t>{32, 4}));

  const model::LoraWeights loaded = load_peft_adapter(dir / "adapter", config);
  EXPECT_EQ(loaded.config.r, 4);
  EXPECT_DOUBLE_EQ(loaded.config.scaling(), 2.0);
  EXPECT_EQ(loaded.config.target_modules, (std::vector<Projection>{Projection::q, Projection::v, Projection::down}));
  const auto original = lora.named_tensors();
  const auto reread = loaded.named_tensors();
  ASSERT_EQ(original.size(), reread.size());
  for (size_t i = 0; i < original.size(); ++i) {
    EXPECT_EQ(original[i].first, reread[i].first);
    EXPECT_TRUE(at::equal(original[i].second, reread[i].second)) << original[i].first;
  }
}

TEST(PeftAdapter, GaussianInitDrawsAWithStdOneOverR) {
  model::LoraConfig lc;
  lc.r = 4;
  lc.target_modules = {model::Projection::gate};
  const model::Qwen3Config config = small_config();
  const model::LoraWeights kaiming = model::LoraWeights::init(config, lc, 3, at::kCPU, model::LoraInit::kaiming_uniform);
  const model::LoraWeights gaussian = model::LoraWeights::init(config, lc, 3, at::kCPU, model::LoraInit::gaussian);
  const at::Tensor a = gaussian.layers[0][static_cast<int>(model::Projection::gate)].A;  // [4, 32]
  // Kaiming-uniform is bounded by 1/sqrt(in) = 0.177; N(0, 1/4) values reach past it.
  EXPECT_LE(kaiming.layers[0][4].A.abs().max().item<double>(), 1.0 / std::sqrt(32.0));
  EXPECT_GT(a.abs().max().item<double>(), 0.4);
  EXPECT_NEAR(a.std().item<double>(), 0.25, 0.05);
  EXPECT_EQ(gaussian.layers[1][4].B.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(peft_adapter_config(lc, "b", "gaussian")["init_lora_weights"], "gaussian");
}

TEST(PeftAdapter, LoadRejectsWhatItCannotRepresent) {
  const model::Qwen3Config config = small_config();
  TempDir dir;
  save_peft_adapter(dir / "a", random_lora(config, {model::Projection::q}), "base", "true");
  nlohmann::json j = nlohmann::json::parse(read_file(dir / "a/adapter_config.json"));

  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json changed = j;
    changed[key] = value;
    write_text(dir / "a/adapter_config.json", changed.dump(2));
    return error_of([&] { load_peft_adapter(dir / "a", config); });
  };
  const std::string rank_pattern = with("rank_pattern", {{"q_proj", 8}});
  EXPECT_CONTAINS(rank_pattern, "adapter_config.json");
  EXPECT_CONTAINS(rank_pattern, "\"rank_pattern\"");
  EXPECT_CONTAINS(rank_pattern, "not supported");
  EXPECT_CONTAINS(with("alpha_pattern", {{"q_proj", 8}}), "not supported");
  EXPECT_CONTAINS(with("use_dora", true), "DoRA");
  EXPECT_CONTAINS(with("r", 8), "has shape [4, 32], expected [8, 32]");
  const std::string missing = with("target_modules", {"q_proj", "k_proj"});
  EXPECT_CONTAINS(missing, "adapter_model.safetensors");
  EXPECT_CONTAINS(missing, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
  // A regex string selects the same projection: loads.
  with("target_modules", R"(.*\.q_proj)");
  EXPECT_NO_THROW(load_peft_adapter(dir / "a", config));
  // A base with more layers than the adapter was trained for.
  nlohmann::json deeper = config.to_json();
  deeper["num_hidden_layers"] = 3;
  EXPECT_CONTAINS(error_of([&] { load_peft_adapter(dir / "a", model::Qwen3Config::from_json(deeper, "d")); }),
                  "layers.2.self_attn.q_proj.lora_A.weight");
}

// ---- init-model and merge ----

TEST(InitModel, PresetsAndOutputLoadsBack) {
  const model::Qwen3Config eight = init_model_preset("8B");
  EXPECT_EQ(eight.hidden_size, 4096);
  EXPECT_EQ(eight.intermediate_size, 12288);
  EXPECT_EQ(eight.num_hidden_layers, 36);
  EXPECT_EQ(eight.num_key_value_heads, 8);
  EXPECT_FALSE(eight.tie_word_embeddings);
  EXPECT_TRUE(init_model_preset("0.6B").tie_word_embeddings);
  EXPECT_EQ(init_model_preset("32B").num_attention_heads, 64);
  EXPECT_CONTAINS(error_of([] { init_model_preset("7B"); }), "tiny-gqa4");

  TempDir dir;
  InitModelOptions options;
  options.config = small_config();
  options.output_dir = dir / "m";
  options.seed = 9;
  options.dtype = at::kFloat;
  options.max_shard_bytes = 20000;  // forces several shards
  init_model(options);
  EXPECT_TRUE(fs::exists(dir / "m/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir / ".m.init-tmp"));
  const nlohmann::json written = nlohmann::json::parse(read_file(dir / "m/config.json"));
  EXPECT_EQ(written["architectures"], nlohmann::json({"Qwen3ForCausalLM"}));
  EXPECT_EQ(written["model_type"], "qwen3");
  EXPECT_EQ(written["head_dim"], 8);
  EXPECT_EQ(written["torch_dtype"], "float32");
  EXPECT_EQ(written["tie_word_embeddings"], false);

  const model::Qwen3Config reread = model::Qwen3Config::from_file(dir / "m/config.json");
  const model::Qwen3Weights loaded = model::Qwen3Weights::load(dir / "m", reread, at::kFloat, at::kCPU);
  const model::Qwen3Weights expected = model::Qwen3Weights::random(reread, 9, 0.02, at::kFloat);
  const auto a = loaded.named_tensors(reread), b = expected.named_tensors(reread);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  EXPECT_CONTAINS(error_of([&] { init_model(options); }), "already exists");
}

TEST(Merge, AddsScaledDeltaAndMatchesTheAdapterModel) {
  using model::Projection;
  TempDir dir;
  InitModelOptions init;
  init.config = small_config(/*tied=*/true);
  init.output_dir = dir / "base";
  init.dtype = at::kFloat;
  init.seed = 1;
  init_model(init);
  write_text(dir / "base/tokenizer_config.json", "{}");
  const model::Qwen3Config config = model::Qwen3Config::from_file(dir / "base/config.json");
  const model::LoraWeights lora = random_lora(config, {Projection::q, Projection::up}, 6.0);
  save_peft_adapter(dir / "adapter", lora, dir / "base", "true");

  MergeOptions options;
  options.base_dir = dir / "base";
  options.adapter_dir = dir / "adapter";
  options.output_dir = dir / "merged";
  merge_adapter(options);
  EXPECT_TRUE(fs::exists(dir / "merged/tokenizer_config.json"));
  EXPECT_TRUE(fs::exists(dir / "merged/model.safetensors"));

  const model::Qwen3Weights base = model::Qwen3Weights::load(dir / "base", config, at::kFloat, at::kCPU);
  const model::Qwen3Weights merged = model::Qwen3Weights::load(dir / "merged", config, at::kFloat, at::kCPU);
  const double scaling = 6.0 / 4.0;
  for (int i = 0; i < 2; ++i) {
    const at::Tensor q_expected =
        base.layers[i][model::Projection::q].trainable_weight() + scaling * at::matmul(lora.layers[i][0].B, lora.layers[i][0].A);
    EXPECT_TRUE(at::allclose(merged.layers[i][model::Projection::q].trainable_weight(), q_expected, 1e-6, 1e-6)) << "layer " << i;
    const auto& up = lora.layers[i][static_cast<int>(Projection::up)];
    EXPECT_TRUE(at::allclose(merged.layers[i][model::Projection::up].trainable_weight(), base.layers[i][model::Projection::up].trainable_weight() + scaling * at::matmul(up.B, up.A),
                             1e-6, 1e-6));
    EXPECT_TRUE(at::equal(merged.layers[i][model::Projection::k].trainable_weight(), base.layers[i][model::Projection::k].trainable_weight()));
  }
  EXPECT_TRUE(at::equal(merged.embed_tokens, base.embed_tokens));

  // The merged model computes what base + adapter computes.
  at::manual_seed(2);
  const at::Tensor ids = at::randint(0, 128, {2, 7}, at::kLong);
  const model::Batch batch = model::Batch::causal(ids, ids.clone());
  model::Qwen3Model with_adapter(config, base.to(at::kFloat, at::kCPU));
  model::Qwen3Model merged_model(config, merged.to(at::kFloat, at::kCPU));
  const at::Tensor expected_logits = with_adapter.logits(batch, &lora);
  const at::Tensor merged_logits = merged_model.logits(batch, nullptr);
  EXPECT_TRUE(at::allclose(merged_logits, expected_logits, 1e-4, 1e-4))
      << (merged_logits - expected_logits).abs().max().item<float>();

  // bf16 output: config and tensors in bf16; an existing output directory is refused.
  options.output_dir = dir / "merged-bf16";
  options.dtype = at::kBFloat16;
  merge_adapter(options);
  EXPECT_EQ(nlohmann::json::parse(read_file(dir / "merged-bf16/config.json"))["torch_dtype"], "bfloat16");
  EXPECT_EQ(io::SafetensorsFile(dir / "merged-bf16/model.safetensors").info("model.layers.0.self_attn.q_proj.weight").dtype,
            "BF16");
  EXPECT_CONTAINS(error_of([&] { merge_adapter(options); }), "already exists");
}

TEST(Merge, FailureLeavesNoOutput) {
  TempDir dir;
  InitModelOptions init;
  init.config = small_config();
  init.output_dir = dir / "base";
  init.dtype = at::kFloat;
  init_model(init);
  // An adapter for a wider model: shapes do not fit this base.
  nlohmann::json wider_json = small_config().to_json();
  wider_json["hidden_size"] = 48;
  const model::Qwen3Config wider = model::Qwen3Config::from_json(wider_json, "wider");
  save_peft_adapter(dir / "adapter", random_lora(wider, {model::Projection::q}), "wider", "true");
  MergeOptions options;
  options.base_dir = dir / "base";
  options.adapter_dir = dir / "adapter";
  options.output_dir = dir / "merged";
  EXPECT_CONTAINS(error_of([&] { merge_adapter(options); }), "has shape [4, 48], expected [4, 32]");
  EXPECT_FALSE(fs::exists(dir / "merged"));
  EXPECT_FALSE(fs::exists(dir / ".merged.merge-tmp"));
}

}  // namespace

// ---- memory plan ----

TEST(MemoryPlan, ActivationEstimateIsWithinFifteenPercentOfPeaksMeasuredOnAnH200) {
  // docs/PERF.md (qft 7c91565, Qwen3-8B shapes, LoRA r16 all projections, bf16, seq 2048 unless said): peak
  // GiB minus the model state (bf16 weights 15.26 GiB + LoRA masters, gradients, m, v 0.65 GiB).
  const model::Qwen3Config c = hf::init_model_preset("8B");
  struct Case { int64_t tokens; bool checkpointing; double measured_peak_gib; };
  for (const Case& k : {Case{2 * 2048, false, 36.4}, Case{4 * 2048, true, 20.9}, Case{16384, true, 25.9},
                        Case{32768, true, 35.9}}) {
    ActivationShape shape;
    shape.config = c;
    shape.tokens = k.tokens;
    shape.gradient_checkpointing = k.checkpointing;
    shape.lora_r = 16;
    const double estimate = estimate_activation_bytes(shape) / 1073741824.0;
    const double measured = k.measured_peak_gib - 15.26 - 0.65;
    EXPECT_NEAR(estimate, measured, 0.15 * measured) << k.tokens << " tokens, checkpointing " << k.checkpointing;
  }
  // Sequence parallelism and tensor parallelism shrink it; checkpointing far more.
  ActivationShape whole;
  whole.config = c;
  whole.tokens = 8192;
  ActivationShape recompute = whole;
  recompute.gradient_checkpointing = true;
  EXPECT_LT(estimate_activation_bytes(recompute) * 4, estimate_activation_bytes(whole));
  ActivationShape selective = whole;
  selective.selective_recompute = true;
  const double ratio = static_cast<double>(estimate_activation_bytes(selective)) / estimate_activation_bytes(whole);
  EXPECT_GT(ratio, 0.55);
  EXPECT_LT(ratio, 0.75);
  // recompute_num_layers: all layers is full recompute, none is selective, and in between each layer
  // checkpointed trades selective's activations for one layer input; only checkpointed inputs are offloaded.
  ActivationShape block = recompute;
  block.recompute_num_layers = 36;
  EXPECT_EQ(estimate_activation_bytes(block), estimate_activation_bytes(recompute));
  block.recompute_num_layers = 0;
  EXPECT_EQ(estimate_activation_bytes(block), estimate_activation_bytes(selective));
  int64_t previous = estimate_activation_bytes(selective);
  for (const int64_t n : {1, 18, 33}) {
    block.recompute_num_layers = n;
    const int64_t bytes = estimate_activation_bytes(block);
    EXPECT_LT(bytes, previous) << n;
    EXPECT_GT(bytes, estimate_activation_bytes(recompute)) << n;
    previous = bytes;
  }
  block.recompute_num_layers = 33;
  block.offloaded_layers = 36;
  EXPECT_EQ(estimate_offloaded_bytes(block), int64_t{33} * 8192 * 4096 * 2);
  // checkpoint_residuals: two kept tensors per checkpointed layer, on the device or offloaded.
  ActivationShape residuals = block;
  residuals.checkpoint_residuals = true;
  EXPECT_EQ(estimate_offloaded_bytes(residuals), 2 * estimate_offloaded_bytes(block));
  residuals.offloaded_layers = block.offloaded_layers = 0;
  EXPECT_EQ(estimate_activation_bytes(residuals) - estimate_activation_bytes(block), int64_t{33} * 8192 * 4096 * 2);
}

TEST(MemoryPlan, TiledMlpAndOffloadingShrinkTheLongContextEstimate) {
  // Qwen3-8B, LoRA r16, bf16, 524,288 tokens, gradient checkpointing (issue 8's target).
  ActivationShape base;
  base.config = hf::init_model_preset("8B");
  base.tokens = 524288;
  base.gradient_checkpointing = true;
  base.lora_r = 16;
  constexpr double GiB = 1073741824.0;
  const int64_t N = base.tokens, H = 4096, I = 12288, L = 36, b = 2;
  const int64_t untiled = estimate_activation_bytes(base);
  ActivationShape tiled = base;
  tiled.tiled_mlp = true;
  // Gone: gate, up, act kept by the layer being recomputed and the three MLP gradients of its backward, for
  // every token, and the LoRA x·Aᵀ of gate, up and down; added: one chunk (auto: 128 chunks of 4096 rows) of
  // the six.
  const int64_t chunk_rows = N / 128;
  EXPECT_EQ(untiled - estimate_activation_bytes(tiled), N * 6 * I * b + N * 3 * 16 * b - chunk_rows * 6 * I * b);
  ActivationShape bigger_chunks = tiled;
  bigger_chunks.tiled_mlp_num_shards = 16;
  EXPECT_EQ(estimate_activation_bytes(bigger_chunks) - estimate_activation_bytes(tiled), (N / 16 - chunk_rows) * 6 * I * b);
  // Offloading: K inputs leave the GPU (one comes back ahead of its layer) and go to host memory.
  ActivationShape offloaded = tiled;
  offloaded.offloaded_layers = 24;
  EXPECT_EQ(estimate_offloaded_bytes(offloaded), 24 * N * H * b);
  EXPECT_EQ(estimate_activation_bytes(tiled) - estimate_activation_bytes(offloaded), 23 * N * H * b);
  EXPECT_EQ(estimate_offloaded_bytes(tiled), 0);
  // Without gradient checkpointing there is nothing to offload.
  ActivationShape whole = offloaded;
  whole.gradient_checkpointing = false;
  EXPECT_EQ(estimate_offloaded_bytes(whole), 0);
  // All 36 inputs (144 GiB) are more than the GPU machine's 128 GiB of host memory: the plan says so.
  offloaded.offloaded_layers = L;
  EXPECT_NEAR(estimate_offloaded_bytes(offloaded) / GiB, 144.0, 1e-9);
  // What remains on the GPU for 8B at 524k with 24 of 36 inputs offloaded fits an H200 beside ~16 GiB of state.
  offloaded.offloaded_layers = 24;
  MemoryPlan plan;
  plan.state_bytes = static_cast<int64_t>(16.0 * GiB);
  plan.activation_bytes = estimate_activation_bytes(offloaded);
  plan.host_bytes = estimate_offloaded_bytes(offloaded);
  plan.tokens = N;
  plan.device_total_bytes = static_cast<int64_t>(139.8 * GiB);
  EXPECT_FALSE(clearly_too_large(plan)) << describe(plan);
  EXPECT_CONTAINS(describe(plan), "96.0 GiB of layer inputs offloaded to host memory");
  plan.activation_bytes = untiled;  // neither: too large
  EXPECT_TRUE(clearly_too_large(plan)) << describe(plan);
  // The host: 96 GiB fits a 128 GiB node for one rank, not for two ranks offloading as much each.
  plan.host_total_bytes = static_cast<int64_t>(128 * GiB);
  EXPECT_FALSE(host_too_large(plan));
  plan.host_ranks = 2;
  EXPECT_TRUE(host_too_large(plan));
  EXPECT_CONTAINS(describe(plan), "96.0 GiB of layer inputs offloaded to host memory (x 2 ranks on the node) of 128.0 GiB");
  plan.host_total_bytes = 0;  // unknown: not refused
  EXPECT_FALSE(host_too_large(plan));
}

TEST(MemoryPlan, OnlyAClearlyOversizedRunIsRefused) {
  MemoryPlan plan;
  plan.device_total_bytes = 100;
  plan.state_bytes = 40;
  plan.activation_bytes = 70;  // 110 x 0.85 < 100: the estimate's error could still let it fit
  EXPECT_FALSE(clearly_too_large(plan));
  plan.activation_bytes = 90;  // 130 x 0.85 > 100
  EXPECT_TRUE(clearly_too_large(plan));
  plan.device_total_bytes = 0;  // CPU: no device limit to check against
  EXPECT_FALSE(clearly_too_large(plan));
  EXPECT_NE(describe(plan).find("memory per process"), std::string::npos) << describe(plan);
}
