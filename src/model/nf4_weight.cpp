#include "model/nf4_weight.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "model/ops/fused_kernels.h"
#include "model/shape_string.h"

namespace qft::model {
namespace {

// dQuantizeNF4's thresholds (the midpoints of the code book, as the float literals of its comparison
// tree, ascending): the code of x is the number of thresholds x exceeds, which at::bucketize (right =
// false: the count of boundaries strictly below x) computes.
const float kNf4Thresholds[15] = {-0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f,
                                  -0.33967943489551544f, -0.23460740596055984f, -0.13791173323988914f,
                                  -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,
                                  0.2035212516784668f,   0.2920137718319893f,   0.3893125355243683f,
                                  0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};

at::Tensor float_table(const float* values, int64_t n, at::Device device) {
  return at::from_blob(const_cast<float*>(values), {n}, at::kFloat).to(device, at::kFloat, false, /*copy=*/true);
}

bool valid_blocksize(int64_t b) { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }

// v[i / group] for i < count, without repeat_interleave (whose output size costs a device sync on CUDA).
at::Tensor repeat_each(const at::Tensor& v, int64_t group, int64_t count) {
  return v.unsqueeze(1).expand({v.size(0), group}).reshape({-1}).narrow(0, 0, count);
}

}  // namespace

at::Tensor nf4_pair_table(const at::Tensor& quant_map) {
  const at::Tensor byte = at::arange(256, quant_map.options().dtype(at::kLong));
  return at::stack({quant_map.index_select(0, byte.div(16, "floor")), quant_map.index_select(0, byte.remainder(16))}, 1);
}

at::Tensor Nf4Scratch::buffer(at::ScalarType dtype, int64_t numel, at::Device device) {
  at::Tensor& b = buffers_[dtype];
  if (!b.defined() || b.numel() < numel || b.device() != device) {
    b = at::Tensor();  // release the smaller one first
    b = at::empty({numel}, at::TensorOptions().dtype(dtype).device(device));
  }
  return b.narrow(0, 0, numel);
}

int64_t Nf4Scratch::bytes() const {
  int64_t total = 0;
  for (const auto& [dtype, b] : buffers_) total += static_cast<int64_t>(b.nbytes());
  return total;
}

Nf4Tensors Nf4Tensors::to(at::Device device) const {
  Nf4Tensors t = *this;
  for (at::Tensor* x : {&t.packed, &t.absmax, &t.quant_map, &t.nested_absmax, &t.nested_quant_map})
    if (x->defined()) *x = x->to(device, /*non_blocking=*/false, /*copy=*/true).contiguous();
  return t;
}

Nf4Tensors nf4_quantize(const at::Tensor& weight, const Nf4Options& options) {
  QFT_CHECK(weight.dim() == 2 && at::isFloatingType(weight.scalar_type()),
            "NF4 quantization needs a 2-D floating weight, got {} {}", shape_string(weight.sizes()),
            c10::toString(weight.scalar_type()));
  QFT_CHECK(valid_blocksize(options.blocksize), "NF4 blocksize must be a power of two in [32, 4096], got {}",
            options.blocksize);
  Nf4Tensors t;
  t.shape = weight.sizes().vec();
  t.dtype = weight.scalar_type();
  t.blocksize = options.blocksize;
  const int64_t n = weight.numel(), bs = options.blocksize, blocks = (n + bs - 1) / bs;
  const at::Device device = weight.device();
  // Zero padding to whole blocks changes no absmax, and the pad element of an odd count is bitsandbytes'
  // loaded 0.0 (code 7, or 0 in an all-zero block).
  at::Tensor flat = weight.reshape({-1}).to(at::kFloat);
  if (blocks * bs != n) flat = at::constant_pad_nd(flat, {0, blocks * bs - n}, 0.0);
  const at::Tensor block_values = flat.view({blocks, bs});
  // bitsandbytes' block maximum skips a NaN element (fmaxf); that element then gets code 0 below.
  at::Tensor absmax = block_values.abs().nan_to_num_(0.0, std::numeric_limits<double>::infinity()).amax({1});
  // x * (1/absmax): bitsandbytes multiplies by the fp32 reciprocal. An all-zero block gives 0 * inf =
  // NaN, whose code is 0 there (every comparison false); bucketize would put NaN last, hence the where.
  const at::Tensor scaled = block_values * absmax.reciprocal().unsqueeze(1);
  at::Tensor codes = at::bucketize(scaled, float_table(kNf4Thresholds, 15, device), /*out_int32=*/true,
                                   /*right=*/false);
  codes = at::where(scaled.isnan(), at::zeros_like(codes), codes).to(at::kByte).view({-1});
  const int64_t pairs = (n + 1) / 2;
  const at::Tensor pair_codes = codes.narrow(0, 0, 2 * pairs).view({pairs, 2});
  t.packed = pair_codes.select(1, 0).bitwise_left_shift(4).bitwise_or_(pair_codes.select(1, 1)).contiguous();
  t.quant_map = float_table(nf4::kCodebook, 16, device);
  if (!options.double_quant) {
    t.absmax = absmax.contiguous();
    return t;
  }
  // The 8-bit step on the CPU reference (bitsandbytes' binary search and midpoint rule), with torch's
  // fp32 mean as the offset.
  nf4::Quantized q;
  const at::Tensor absmax_cpu = absmax.cpu().contiguous();
  q.absmax.assign(absmax_cpu.data_ptr<float>(), absmax_cpu.data_ptr<float>() + blocks);
  nf4::quantize_absmax(q, absmax.mean().item<float>());
  t.nested = true;
  t.nested_blocksize = q.nested_blocksize;
  t.offset = q.offset;
  t.absmax = at::from_blob(q.absmax_codes.data(), {blocks}, at::kByte).to(device, at::kByte, false, true);
  t.nested_absmax = at::from_blob(q.absmax2.data(), {static_cast<int64_t>(q.absmax2.size())}, at::kFloat)
                        .to(device, at::kFloat, false, true);
  t.nested_quant_map = float_table(nf4::kDynamicMap, 256, device);
  return t;
}

at::Tensor nf4_block_absmax(const Nf4Tensors& t) {
  if (!t.nested) return t.absmax;
  const int64_t blocks = t.blocks();
  const at::Tensor scale = repeat_each(t.nested_absmax, t.nested_blocksize, blocks);
  // dequantize_blockwise's product, then `absmax += offset`: two roundings, no fused multiply-add.
  return t.nested_quant_map.index_select(0, t.absmax.to(at::kInt)).mul_(scale).add_(t.offset);
}

at::Tensor nf4_dequantize(const Nf4Tensors& t, at::ScalarType dtype, Nf4Scratch& scratch,
                          const at::Tensor& pair_table) {
  const int64_t n = t.numel(), pairs = (n + 1) / 2, bs = t.blocksize, blocks = t.blocks();
  const at::Device device = t.packed.device();
  const at::Tensor absmax = nf4_block_absmax(t);
  at::Tensor index = scratch.buffer(at::kInt, pairs, device);
  index.copy_(t.packed.view({-1}));
  at::Tensor work = scratch.buffer(at::kFloat, 2 * pairs, device);
  at::Tensor work_pairs = work.view({pairs, 2});
  at::index_select_out(work_pairs, pair_table.defined() ? pair_table : nf4_pair_table(t.quant_map), 0, index);
  const at::Tensor values = work.narrow(0, 0, n);
  // NF4[q] * absmax[block] in fp32, rounded once into the original dtype.
  at::Tensor rounded = t.dtype == at::kFloat ? values : scratch.buffer(t.dtype, n, device);
  if (n == blocks * bs) {
    at::Tensor rounded_blocks = rounded.view({blocks, bs});
    at::mul_out(rounded_blocks, values.view({blocks, bs}), absmax.unsqueeze(1));
  } else {
    at::mul_out(rounded, values, repeat_each(absmax, bs, n));
  }
  if (dtype == t.dtype) return rounded.view(t.shape);
  // Widened or narrowed to the compute dtype (bitsandbytes' `.to(A.dtype)`); fp32 reuses the work buffer.
  at::Tensor out = scratch.buffer(dtype, n, device);
  out.copy_(rounded);
  return out.view(t.shape);
}

Nf4Weight::Nf4Weight(Nf4Tensors tensors, at::ScalarType compute_dtype, std::shared_ptr<Nf4Scratch> scratch,
                     WeightShard shard)
    : tensors_(std::move(tensors)), compute_dtype_(compute_dtype), scratch_(std::move(scratch)), shard_(shard) {
  QFT_CHECK(tensors_.shape.size() == 2, "an NF4 weight must be 2-D [out, in], got {}", shape_string(tensors_.shape));
  QFT_CHECK(scratch_ != nullptr, "an NF4 weight needs a dequantization scratch");
  pair_table_ = nf4_pair_table(tensors_.quant_map);
  // The fused kernel knows only the NF4 code book (and, when nested, bitsandbytes' dynamic map for the
  // absmax codes); a checkpoint storing other tables keeps the ATen path. One comparison at load.
  const at::Tensor cpu_map = tensors_.quant_map.to(at::kCPU, at::kFloat);
  standard_tables_ = at::equal(cpu_map, float_table(nf4::kCodebook, 16, at::kCPU));
  if (tensors_.nested)
    standard_tables_ = standard_tables_ && at::equal(tensors_.nested_quant_map.to(at::kCPU, at::kFloat),
                                                     float_table(nf4::kDynamicMap, 256, at::kCPU));
}

std::shared_ptr<Nf4Weight> Nf4Weight::quantize(const at::Tensor& weight, const Nf4Options& options,
                                               at::ScalarType compute_dtype, std::shared_ptr<Nf4Scratch> scratch,
                                               WeightShard shard) {
  return std::make_shared<Nf4Weight>(nf4_quantize(weight, options), compute_dtype, std::move(scratch), shard);
}

at::Tensor Nf4Weight::dense() const {
  // CUDA, bf16 in and out: one bandwidth-bound kernel (kernels/nf4.cu, bit-exact with the ATen path).
  if (standard_tables_ && compute_dtype_ == at::kBFloat16 && tensors_.dtype == at::kBFloat16 &&
      tensors_.packed.is_cuda()) {
    const int64_t n = tensors_.numel();
    at::Tensor out = scratch_->buffer(at::kBFloat16, n, tensors_.packed.device());
    if (ops::fused::nf4_dequantize(out, tensors_.packed, tensors_.absmax, tensors_.nested_absmax,
                                   tensors_.nested_quant_map, tensors_.offset, tensors_.nested, n,
                                   tensors_.blocksize, tensors_.nested_blocksize))
      return out.view(tensors_.shape);
  }
  return nf4_dequantize(tensors_, compute_dtype_, *scratch_, pair_table_);
}

at::Tensor Nf4Weight::dequantize(at::ScalarType dtype) const {
  Nf4Scratch own;  // buffers of exactly this weight's size, owned by the result
  return nf4_dequantize(tensors_, dtype, own, pair_table_);
}

int64_t Nf4Weight::storage_bytes() const {
  int64_t total = 0;
  for (const at::Tensor* x : {&tensors_.packed, &tensors_.absmax, &tensors_.quant_map, &tensors_.nested_absmax,
                              &tensors_.nested_quant_map})
    if (x->defined()) total += static_cast<int64_t>(x->nbytes());
  return total;
}

// ---- bitsandbytes layout ----------------------------------------------------------------------------

std::string bnb_dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    case at::kFloat: return "float32";
    default: fail("bitsandbytes 4-bit weights keep a bfloat16, float16 or float32 dtype, not {}", c10::toString(dtype));
  }
}

namespace {

at::ScalarType dtype_from_bnb_name(const std::string& name, const std::string& where) {
  if (name == "bfloat16") return at::kBFloat16;
  if (name == "float16") return at::kHalf;
  if (name == "float32") return at::kFloat;
  fail("{}: \"dtype\" must be bfloat16, float16 or float32, got \"{}\"", where, name);
}

const char* const kQuantStateNf4 = ".quant_state.bitsandbytes__nf4";
const char* const kQuantStateFp4 = ".quant_state.bitsandbytes__fp4";

}  // namespace

io::NamedTensors bnb_4bit_tensors(const std::string& key, const Nf4Tensors& t) {
  // QuantState.as_dict(packed=True): key order as inserted there.
  nlohmann::ordered_json state = {{"quant_type", "nf4"},
                                  {"blocksize", t.blocksize},
                                  {"dtype", bnb_dtype_name(t.dtype)},
                                  {"shape", t.shape}};
  if (t.nested) {
    state["nested_blocksize"] = t.nested_blocksize;
    state["nested_dtype"] = "float32";
    state["nested_offset"] = static_cast<double>(t.offset);
  }
  // json.dumps' default separators.
  const std::string text = state.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  std::string spaced;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    spaced += c;
    if (c == '"' && (i == 0 || text[i - 1] != '\\')) in_string = !in_string;
    if (!in_string && (c == ':' || c == ',')) spaced += ' ';
  }
  at::Tensor json_bytes = at::empty({static_cast<int64_t>(spaced.size())}, at::kByte);
  std::memcpy(json_bytes.data_ptr<uint8_t>(), spaced.data(), spaced.size());
  io::NamedTensors out;
  out.emplace_back(key, t.packed.cpu().reshape({-1, 1}));
  out.emplace_back(key + ".absmax", t.absmax.cpu());
  out.emplace_back(key + ".quant_map", t.quant_map.cpu());
  if (t.nested) {
    out.emplace_back(key + ".nested_absmax", t.nested_absmax.cpu());
    out.emplace_back(key + ".nested_quant_map", t.nested_quant_map.cpu());
  }
  out.emplace_back(key + kQuantStateNf4, json_bytes);
  return out;
}

bool is_bnb_4bit(const io::SafetensorsCheckpoint& ckpt, const std::string& key) {
  return ckpt.contains(key + kQuantStateNf4) || ckpt.contains(key + kQuantStateFp4);
}

Nf4Tensors read_bnb_4bit(const io::SafetensorsCheckpoint& ckpt, const std::string& key,
                         const std::vector<int64_t>& shape, std::vector<std::string>& used) {
  const std::string state_key = key + kQuantStateNf4;
  QFT_CHECK(!ckpt.contains(key + kQuantStateFp4),
            "{}: \"{}\" is a bitsandbytes FP4 weight (bnb_4bit_quant_type fp4); qft reads NF4 4-bit checkpoints only",
            ckpt.file_of(key + kQuantStateFp4).path(), key + kQuantStateFp4);
  const std::string& state_file = ckpt.file_of(state_key).path();
  const std::string where = fmt::format("{}: \"{}\"", state_file, state_key);
  QFT_CHECK(ckpt.info(state_key).dtype == "U8", "{} must be U8 (the bytes of the quant-state JSON), got {}", where,
            ckpt.info(state_key).dtype);
  const at::Tensor bytes = ckpt.tensor(state_key).contiguous();
  const std::string text(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{} is not valid JSON: {}", where, e.what());
  }
  QFT_CHECK(state.is_object(), "{} must hold a JSON object", where);
  auto require = [&](const char* k) -> const nlohmann::json& {
    QFT_CHECK(state.contains(k), "{}: missing \"{}\"", where, k);
    return state[k];
  };
  QFT_CHECK(require("quant_type") == "nf4", "{}: \"quant_type\" must be \"nf4\", got {}", where, state["quant_type"].dump());
  const nlohmann::json& bs = require("blocksize");
  QFT_CHECK(bs.is_number_integer() && valid_blocksize(bs.get<int64_t>()),
            "{}: \"blocksize\" must be a power of two in [32, 4096], got {}", where, bs.dump());
  const nlohmann::json& dtype = require("dtype");
  QFT_CHECK(dtype.is_string(), "{}: \"dtype\" must be a string, got {}", where, dtype.dump());
  const nlohmann::json& stored_shape = require("shape");
  QFT_CHECK(stored_shape.is_array() && stored_shape == nlohmann::json(shape),
            "{}: \"shape\" is {} but the config needs {}", where, stored_shape.dump(), shape_string(shape));

  Nf4Tensors t;
  t.shape = shape;
  t.blocksize = bs.get<int>();
  t.dtype = dtype_from_bnb_name(dtype.get<std::string>(), where);
  t.nested = state.contains("nested_offset");
  if (t.nested) {
    const nlohmann::json& nbs = require("nested_blocksize");
    QFT_CHECK(nbs.is_number_integer() && valid_blocksize(nbs.get<int64_t>()),
              "{}: \"nested_blocksize\" must be a power of two in [32, 4096], got {}", where, nbs.dump());
    t.nested_blocksize = nbs.get<int>();
    QFT_CHECK(require("nested_offset").is_number(), "{}: \"nested_offset\" must be a number", where);
    t.offset = state["nested_offset"].get<float>();
    QFT_CHECK(!state.contains("nested_dtype") || state["nested_dtype"] == "float32",
              "{}: \"nested_dtype\" must be \"float32\", got {}", where, state["nested_dtype"].dump());
  }
  const int64_t n = t.numel(), blocks = t.blocks();
  // Every tensor of the weight, with the dtype and element count bitsandbytes writes.
  auto read = [&](const std::string& name, const char* want_dtype, int64_t numel, const char* what) {
    QFT_CHECK(ckpt.contains(name), "{}: missing tensor \"{}\" ({}) of the 4-bit weight \"{}\"", ckpt.source(), name,
              what, key);
    const io::TensorInfo& info = ckpt.info(name);
    const std::string& file = ckpt.file_of(name).path();
    if (name == key && info.dtype != want_dtype) {
      fail("{}: \"{}\" is {}: qft reads 4-bit weights stored as uint8 (bnb_4bit_quant_storage uint8) only", file, name,
           info.dtype);
    }
    QFT_CHECK(info.dtype == want_dtype, "{}: \"{}\" ({}) must be {}, got {}", file, name, what, want_dtype, info.dtype);
    int64_t count = 1;
    for (int64_t d : info.shape) count *= d;
    QFT_CHECK(count == numel, "{}: \"{}\" ({}) has shape {} ({} elements) but a {} weight with blocksize {} needs {}",
              file, name, what, shape_string(info.shape), count, shape_string(shape), t.blocksize, numel);
    used.push_back(name);
    return ckpt.tensor(name).reshape({-1});
  };
  t.packed = read(key, "U8", (n + 1) / 2, "packed 4-bit codes");
  t.absmax = read(key + ".absmax", t.nested ? "U8" : "F32", blocks, "per-block absmax");
  t.quant_map = read(key + ".quant_map", "F32", 16, "NF4 code map");
  if (t.nested) {
    t.nested_absmax =
        read(key + ".nested_absmax", "F32", (blocks + t.nested_blocksize - 1) / t.nested_blocksize, "nested absmax");
    t.nested_quant_map = read(key + ".nested_quant_map", "F32", 256, "nested code map");
  }
  used.push_back(state_key);
  return t;
}

nlohmann::json bnb_quantization_config(bool double_quant, at::ScalarType compute_dtype) {
  return {{"_load_in_4bit", true},
          {"_load_in_8bit", false},
          {"bnb_4bit_compute_dtype", bnb_dtype_name(compute_dtype)},
          {"bnb_4bit_quant_storage", "uint8"},
          {"bnb_4bit_quant_type", "nf4"},
          {"bnb_4bit_use_double_quant", double_quant},
          {"llm_int8_enable_fp32_cpu_offload", false},
          {"llm_int8_has_fp16_weight", false},
          {"llm_int8_skip_modules", nullptr},
          {"llm_int8_threshold", 6.0},
          {"load_in_4bit", true},
          {"load_in_8bit", false},
          {"quant_method", "bitsandbytes"}};
}

void check_bnb_quantization_config(const nlohmann::json& q, const std::string& source) {
  QFT_CHECK(q.is_object(), "{}: \"quantization_config\" must be an object, got {}", source, q.dump());
  const std::string method = q.value("quant_method", std::string("bitsandbytes"));
  QFT_CHECK(method == "bitsandbytes",
            "{}: quantization_config.quant_method \"{}\" is not supported (qft reads bitsandbytes 4-bit NF4 checkpoints)",
            source, method);
  QFT_CHECK(!q.value("load_in_8bit", false),
            "{}: quantization_config.load_in_8bit is true: 8-bit (LLM.int8) checkpoints are not supported (qft reads "
            "bitsandbytes 4-bit NF4)",
            source);
  QFT_CHECK(q.value("load_in_4bit", true), "{}: quantization_config.load_in_4bit must be true", source);
  const nlohmann::json type = q.value("bnb_4bit_quant_type", nlohmann::json("fp4"));
  QFT_CHECK(type == "nf4", "{}: quantization_config.bnb_4bit_quant_type is {}: qft reads NF4 4-bit checkpoints only",
            source, type.dump());
  const nlohmann::json storage = q.value("bnb_4bit_quant_storage", nlohmann::json("uint8"));
  QFT_CHECK(storage == "uint8",
            "{}: quantization_config.bnb_4bit_quant_storage is {}: qft reads 4-bit weights stored as uint8 only", source,
            storage.dump());
}

}  // namespace qft::model
