// QLoRA's frozen base: a projection weight stored as NF4 4-bit codes in bitsandbytes' layout
// (formats.md §4), behind the same WeightStorage interface as a dense weight, so the ops, LoRA and
// tensor parallelism take it unchanged.
//
// What is stored (per projection, on the training device): the packed codes (uint8, two per byte, first
// element in the high nibble), the per-block absmax (blocksize 64) — with double quantization as 8-bit
// codes into the signed dynamic map plus a float absmax per 256 blocks and one offset — the two code
// maps, and the original shape and dtype. About 0.53 bytes per weight instead of 2 for bf16.
//
// dense() dequantizes into a scratch buffer that every projection of the model shares (one per model
// load, on its device; it grows to the largest projection's size and then stays). Sharing is safe
// because a projection's dense weight is used only inside the op that asked for it: linear_forward
// and linear_backward each call dense() and finish their GEMMs with it before they return, the
// backward dequantizes again instead of keeping the forward's copy, and every op of a step runs in
// order on one stream (CPU ops are synchronous; CUDA ops on the current stream are ordered, and the
// caching allocator reuses a freed block only in stream order). A caller must therefore never hold
// the result of dense() across another projection's dense(), nor use it from two threads at once.
// The values are bitsandbytes' dequantize_4bit: NF4[q] * absmax[block] in fp32, rounded once to the
// original dtype, then cast to the compute dtype (as bnb's matmul_4bit casts to the input's dtype).
// All of it is vectorised ATen (a 256-entry table of byte -> two values looked up by index, one
// per-block multiply): bandwidth-bound, the same code on CPU and GPU.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/linear.h"
#include "model/nf4.h"

namespace qft::model {

// How a dense weight is quantized (the model section's load_in_4bit keys; blocksize is bitsandbytes'
// fixed 64 of Linear4bit).
struct Nf4Options {
  bool double_quant = true;
  int blocksize = nf4::kBlocksize;
};

// Flat buffers, one per dtype, reused by every dequantization of one model (see above).
class Nf4Scratch {
 public:
  // The first `numel` elements of this scratch's `dtype` buffer on `device`, grown when too small.
  at::Tensor buffer(at::ScalarType dtype, int64_t numel, at::Device device);
  int64_t bytes() const;

 private:
  std::map<at::ScalarType, at::Tensor> buffers_;
};

// The tensors bitsandbytes keeps for one 4-bit weight (QuantState, formats.md §4.4).
struct Nf4Tensors {
  at::Tensor packed;         // uint8 [(numel + 1) / 2]
  at::Tensor absmax;         // fp32 [blocks], or uint8 codes [blocks] when nested
  at::Tensor quant_map;      // fp32 [16] (the NF4 code book)
  at::Tensor nested_absmax;  // fp32 [ceil(blocks / nested_blocksize)]; undefined unless nested
  at::Tensor nested_quant_map;  // fp32 [256]; undefined unless nested
  float offset = 0.f;           // nested_offset
  bool nested = false;
  int blocksize = nf4::kBlocksize;
  int nested_blocksize = nf4::kNestedBlocksize;
  std::vector<int64_t> shape;  // original [out, in]
  at::ScalarType dtype = at::kBFloat16;  // original dtype (quant_state.dtype)

  int64_t numel() const { return shape.empty() ? 0 : shape[0] * shape[1]; }
  int64_t blocks() const { return (numel() + blocksize - 1) / blocksize; }
  Nf4Tensors to(at::Device device) const;
};

// bitsandbytes.functional.quantize_4bit(quant_type="nf4", compress_statistics=double_quant, blocksize)
// of a 2-D floating tensor, on its device: the same codes and absmax as the CPU reference nf4.h (the
// double quantization of the absmax runs there: it is 1/64 of the weight). The offset is torch's fp32
// mean of the absmax on the weight's device, as bitsandbytes computes it.
Nf4Tensors nf4_quantize(const at::Tensor& weight, const Nf4Options& options);
// The per-block absmax a dequantizer uses (fp32 [blocks]): absmax, or DYN[code] * absmax2 + offset in
// two roundings, as bitsandbytes.
at::Tensor nf4_block_absmax(const Nf4Tensors& t);
// [256, 2]: the two code-book values of each packed byte (high nibble first), for one index_select per byte.
at::Tensor nf4_pair_table(const at::Tensor& quant_map);
// dequantize_4bit into `scratch` (see above): [out, in] in `dtype`, rounded through the original dtype.
// `pair_table`: nf4_pair_table(t.quant_map) if the caller keeps one, else computed here.
at::Tensor nf4_dequantize(const Nf4Tensors& t, at::ScalarType dtype, Nf4Scratch& scratch,
                          const at::Tensor& pair_table = at::Tensor());

class Nf4Weight final : public WeightStorage {
 public:
  Nf4Weight(Nf4Tensors tensors, at::ScalarType compute_dtype, std::shared_ptr<Nf4Scratch> scratch,
            WeightShard shard = {});
  // Quantizes `weight` (the part of the projection this rank holds) on its device.
  static std::shared_ptr<Nf4Weight> quantize(const at::Tensor& weight, const Nf4Options& options,
                                             at::ScalarType compute_dtype, std::shared_ptr<Nf4Scratch> scratch,
                                             WeightShard shard = {});

  const char* kind() const override { return "nf4"; }
  std::vector<int64_t> shape() const override { return tensors_.shape; }
  // Dequantized into the shared scratch: valid until the next dense() of any projection of this model.
  at::Tensor dense() const override;
  const WeightShard& shard() const override { return shard_; }
  int64_t storage_bytes() const override;

  // A fresh tensor (not the scratch) in `dtype`: for merge, export and resharding.
  at::Tensor dequantize(at::ScalarType dtype) const;
  const Nf4Tensors& tensors() const { return tensors_; }
  at::ScalarType compute_dtype() const { return compute_dtype_; }
  const std::shared_ptr<Nf4Scratch>& scratch() const { return scratch_; }
  Nf4Options options() const { return {tensors_.nested, tensors_.blocksize}; }

 private:
  Nf4Tensors tensors_;
  at::Tensor pair_table_;  // nf4_pair_table(quant_map), kept: built once instead of on every dense()
  bool standard_tables_ = false;  // quant_map (and nested_quant_map) are bitsandbytes' own: the fused kernel applies
  at::ScalarType compute_dtype_;
  std::shared_ptr<Nf4Scratch> scratch_;
  WeightShard shard_;
};

// ---- the bitsandbytes safetensors layout (formats.md §4.4, §4.5) ----------------------------------

// "bfloat16" / "float16" / "float32" (str(torch dtype) without "torch.") and back.
std::string bnb_dtype_name(at::ScalarType dtype);

// The tensors of weight key `key` ("model.layers.0.self_attn.q_proj.weight") as transformers saves a
// bnb Linear4bit: KEY (uint8 [(n+1)/2, 1]), KEY.absmax, KEY.quant_map, KEY.nested_absmax,
// KEY.nested_quant_map and KEY.quant_state.bitsandbytes__nf4 (the JSON of the non-tensor state).
io::NamedTensors bnb_4bit_tensors(const std::string& key, const Nf4Tensors& t);

// True when the checkpoint stores `key` as a bitsandbytes 4-bit weight (its quant_state key exists, nf4
// or fp4).
bool is_bnb_4bit(const io::SafetensorsCheckpoint& ckpt, const std::string& key);
// Reads the 4-bit weight `key` of shape `shape` (CPU tensors viewing the files), checking every tensor's
// dtype and shape and the quant_state JSON; errors name the file and the key. Appends the names read
// to `used`.
Nf4Tensors read_bnb_4bit(const io::SafetensorsCheckpoint& ckpt, const std::string& key,
                         const std::vector<int64_t>& shape, std::vector<std::string>& used);

// config.json's quantization_config for a 4-bit NF4 checkpoint (BitsAndBytesConfig.to_dict()).
nlohmann::json bnb_quantization_config(bool double_quant, at::ScalarType compute_dtype);
// An error naming `source` and the key unless `quantization_config` describes a checkpoint qft reads:
// quant_method bitsandbytes, 4-bit, nf4, uint8 storage.
void check_bnb_quantization_config(const nlohmann::json& quantization_config, const std::string& source);

}  // namespace qft::model
