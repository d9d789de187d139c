// qft-probe: runs one forward (and optionally backward) of the training path on a batch given as a
// safetensors file and writes logits, loss and LoRA gradients to another safetensors file. The Python
// reference tests (tests/reference/) compare those numbers with transformers + peft on the same weights.
//
//   qft-probe --model DIR [--adapter DIR] --batch IN.safetensors --output OUT.safetensors
//             [--grads] [--dtype fp32|bf16|fp16] [--device cpu|cuda] [--gradient-checkpointing]
//             [--no-logits]
// IN holds input_ids and labels [B, T] (I64), optionally position_ids and segment_ids.
// OUT holds logits [B, T, V] (F32), loss [1] (F64, mean over targets) and, with --grads,
// each LoRA gradient under its PEFT key.
//
//   qft-probe --loss-scaler FOUND_INF --output OUT.json [--init-scale S] [--growth-factor G]
//             [--backoff-factor B] [--growth-interval N]
// FOUND_INF is one 0/1 per step ("0010..."): whether that step's gradients held an inf/NaN. OUT holds
// the LossScaler's scale after each update and its skipped-step count (the test compares torch's
// GradScaler).
//
//   qft-probe --rope-tables --model DIR --batch IN.safetensors --output OUT.safetensors
// IN holds position_ids [N] (I64); OUT holds inv_freq [D/2], cos and sin [N, D] (F32) from the model's
// config.json (rope_theta and rope_scaling).
//
//   qft-probe --sampler IN.safetensors --output OUT.safetensors [--do-sample] [--temperature T] [--top-k K]
//             [--top-p P] [--min-p P] [--repetition-penalty R]
// IN holds logits [B, V] (F32) and input_ids [B, L] (I64); OUT holds scores [B, V] (F32), the logits after
// generate::process_logits (the sampling test compares them with transformers' logits processors).
//
//   qft-probe --nf4 IN.safetensors --output OUT.safetensors [--device cpu|cuda] [--no-double-quant]
// Quantizes every 2-D tensor T of IN to NF4 on the device (model::nf4_quantize, blocksize 64) and writes
// bitsandbytes' layout of it under T (T, T.absmax, T.quant_map, ...) plus T.dequantized, its
// dequantization in T's dtype on the same device (model::nf4_dequantize): tests/device/qlora_check.sh
// compares both with bitsandbytes.
#include <cstdio>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/files.h"
#include "io/safetensors.h"
#include "model/nf4_weight.h"
#include "model/qwen3_model.h"
#include "hf/peft_adapter.h"
#include "generate/sampler.h"
#include "model/ops/rope.h"
#include "train/loss_scaler.h"

namespace {

struct Options {
  std::string model, adapter, batch, output, dtype = "fp32", device = "cpu";
  bool grads = false, gradient_checkpointing = false, logits = true;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      QFT_CHECK(i + 1 < argc, "qft-probe: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--model") o.model = value();
    else if (a == "--adapter") o.adapter = value();
    else if (a == "--batch") o.batch = value();
    else if (a == "--output") o.output = value();
    else if (a == "--dtype") o.dtype = value();
    else if (a == "--device") o.device = value();
    else if (a == "--grads") o.grads = true;
    else if (a == "--gradient-checkpointing") o.gradient_checkpointing = true;
    else if (a == "--no-logits") o.logits = false;
    else qft::fail("qft-probe: unknown argument '{}'", a);
  }
  QFT_CHECK(!o.model.empty() && !o.batch.empty() && !o.output.empty(),
            "qft-probe: --model, --batch and --output are required");
  return o;
}

at::ScalarType dtype_of(const std::string& name) {
  if (name == "fp32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "fp16") return at::kHalf;
  qft::fail("qft-probe: --dtype must be fp32, bf16 or fp16, got '{}'", name);
}

int run(const Options& o) {
  const at::Device device(o.device == "cuda" ? at::kCUDA : at::kCPU);
  const auto config = qft::model::Qwen3Config::from_file(o.model + "/config.json");
  auto weights = qft::model::Qwen3Weights::load(o.model, config, dtype_of(o.dtype), device);
  qft::model::Qwen3Model model(config, std::move(weights));

  std::optional<qft::model::LoraWeights> lora;
  if (!o.adapter.empty()) lora = qft::hf::load_peft_adapter(o.adapter, config, device);

  const qft::io::SafetensorsFile batch_file(o.batch);
  auto load = [&](const char* name) {
    return batch_file.contains(name) ? batch_file.tensor(name).to(device, at::kLong) : at::Tensor();
  };
  qft::model::Batch batch;
  batch.input_ids = load("input_ids");
  batch.labels = load("labels");
  batch.position_ids = load("position_ids");
  batch.segment_ids = load("segment_ids");
  if (!batch.position_ids.defined()) {
    batch = qft::model::Batch::causal(batch.input_ids, batch.labels);
  }

  std::vector<std::pair<std::string, at::Tensor>> out;
  const qft::model::LoraWeights* adapters = lora ? &*lora : nullptr;
  if (o.logits) out.emplace_back("logits", model.logits(batch, adapters).to(at::kCPU, at::kFloat).contiguous());
  if (o.grads) {
    QFT_CHECK(lora.has_value(), "qft-probe: --grads needs --adapter");
    qft::model::Gradients grads;
    grads.lora = lora->zeros_like();
    const auto counted = model.forward_loss(batch, adapters);
    qft::model::StepOptions options;
    options.gradient_checkpointing = o.gradient_checkpointing;
    options.loss_denominator = static_cast<double>(counted.target_tokens);
    options.train_lora_dropout = false;
    const auto result = model.forward_backward(batch, adapters, grads, options);
    out.emplace_back("loss", at::full({1}, result.loss_sum / result.target_tokens, at::kDouble));
    for (auto& [name, grad] : grads.lora->named_tensors()) out.emplace_back(name, grad.to(at::kCPU).contiguous());
  } else {
    const auto result = model.forward_loss(batch, adapters);
    out.emplace_back("loss", at::full({1}, result.loss_sum / result.target_tokens, at::kDouble));
  }
  qft::io::save_safetensors(o.output, out, {{"format", "pt"}});
  return 0;
}

int run_sampler(int argc, char** argv) {
  std::string input, output;
  qft::generate::SamplingOptions o;
  o.top_k = 0;  // each filter only when asked for
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      QFT_CHECK(i + 1 < argc, "qft-probe: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--sampler") input = value();
    else if (a == "--output") output = value();
    else if (a == "--do-sample") o.do_sample = true;
    else if (a == "--temperature") o.temperature = std::stod(value());
    else if (a == "--top-k") o.top_k = std::stoll(value());
    else if (a == "--top-p") o.top_p = std::stod(value());
    else if (a == "--min-p") o.min_p = std::stod(value());
    else if (a == "--repetition-penalty") o.repetition_penalty = std::stod(value());
    else qft::fail("qft-probe: unknown argument '{}'", a);
  }
  qft::generate::validate(o, "qft-probe");
  const qft::io::SafetensorsFile in(input);
  const at::Tensor logits = in.tensor("logits").to(at::kFloat);
  const at::Tensor ids = in.tensor("input_ids").to(at::kLong);
  const at::Tensor seen = at::zeros(logits.sizes(), at::kBool).scatter_(1, ids, true);
  const at::Tensor scores = qft::generate::process_logits(logits, seen, o).contiguous();
  qft::io::save_safetensors(output, {{"scores", scores}}, {{"format", "pt"}});
  return 0;
}

int run_loss_scaler(int argc, char** argv) {
  std::string flags, output;
  qft::train::LossScalerOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      QFT_CHECK(i + 1 < argc, "qft-probe: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--loss-scaler") flags = value();
    else if (a == "--output") output = value();
    else if (a == "--init-scale") o.init_scale = std::stod(value());
    else if (a == "--growth-factor") o.growth_factor = std::stod(value());
    else if (a == "--backoff-factor") o.backoff_factor = std::stod(value());
    else if (a == "--growth-interval") o.growth_interval = std::stoll(value());
    else qft::fail("qft-probe: unknown argument '{}'", a);
  }
  qft::train::LossScaler scaler(o);
  nlohmann::json scales = nlohmann::json::array(), inverse = nlohmann::json::array();
  for (char c : flags) {
    QFT_CHECK(c == '0' || c == '1', "qft-probe: --loss-scaler takes 0/1 flags, got '{}'", c);
    inverse.push_back(scaler.inverse_scale());
    scaler.update(c == '1');
    scales.push_back(scaler.scale());
  }
  const nlohmann::json result = {{"scales", scales}, {"inverse_scales", inverse}, {"skipped", scaler.skipped_steps()},
                                 {"growth_tracker", scaler.growth_tracker()}};
  qft::write_file_atomic(output, result.dump() + "\n");
  return 0;
}

int run_rope_tables(int argc, char** argv) {
  std::string model_dir, input, output;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      QFT_CHECK(i + 1 < argc, "qft-probe: {} needs a value", a);
      return argv[++i];
    };
    if (a == "--rope-tables") continue;
    else if (a == "--model") model_dir = value();
    else if (a == "--batch") input = value();
    else if (a == "--output") output = value();
    else qft::fail("qft-probe: unknown argument '{}'", a);
  }
  const auto config = qft::model::Qwen3Config::from_file(model_dir + "/config.json");
  const qft::io::SafetensorsFile in(input);
  const at::Tensor positions = in.tensor("position_ids").to(at::kLong);
  const auto [cos, sin] =
      qft::model::ops::rope_tables(positions, config.head_dim, config.rope_theta, at::kFloat, config.rope_scaling);
  const at::Tensor inv_freq =
      qft::model::ops::rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling, at::kCPU);
  qft::io::save_safetensors(output, {{"inv_freq", inv_freq.contiguous()}, {"cos", cos.contiguous()},
                                     {"sin", sin.contiguous()}}, {{"format", "pt"}});
  return 0;
}

}  // namespace

int run_nf4(int argc, char** argv) {
  std::string input, output, device = "cpu";
  bool double_quant = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--no-double-quant") {
      double_quant = false;
      continue;
    }
    QFT_CHECK(i + 1 < argc, "qft-probe: {} needs a value", a);
    const std::string v = argv[++i];
    if (a == "--nf4") input = v;
    else if (a == "--output") output = v;
    else if (a == "--device") device = v;
    else qft::fail("qft-probe --nf4: unknown option '{}'", a);
  }
  QFT_CHECK(!input.empty() && !output.empty(), "qft-probe --nf4 IN --output OUT");
  const at::Device dev(device);
  const qft::io::SafetensorsFile in(input);
  qft::io::NamedTensors out;
  qft::model::Nf4Options options;
  options.double_quant = double_quant;
  for (const std::string& name : in.names()) {
    const at::Tensor w = in.tensor(name).to(dev);
    if (w.dim() != 2) continue;
    const qft::model::Nf4Tensors t = qft::model::nf4_quantize(w, options);
    for (auto& x : qft::model::bnb_4bit_tensors(name, t)) out.push_back(x);
    qft::model::Nf4Scratch scratch;
    out.emplace_back(name + ".dequantized", qft::model::nf4_dequantize(t, w.scalar_type(), scratch).cpu().clone());
  }
  qft::io::save_safetensors(output, out);
  return 0;
}

int main(int argc, char** argv) {
  try {
    if (argc > 1 && std::string(argv[1]) == "--sampler") return run_sampler(argc, argv);
    if (argc > 1 && std::string(argv[1]) == "--nf4") return run_nf4(argc, argv);
    if (argc > 1 && std::string(argv[1]) == "--loss-scaler") return run_loss_scaler(argc, argv);
    if (argc > 1 && std::string(argv[1]) == "--rope-tables") return run_rope_tables(argc, argv);
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
}
