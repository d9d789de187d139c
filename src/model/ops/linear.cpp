#include "model/ops/linear.h"

#include "core/error.h"
#include "core/splitmix64.h"
#include "model/ops/common.h"

namespace qft::model::ops {
namespace {

uint64_t splitmix64(uint64_t x) { return splitmix64_mix(x + kSplitMix64Increment); }

at::Generator generator_for(at::Device device, uint64_t seed) {
  if (device.is_cpu()) return at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Generator gen =
      at::globalContext().getAcceleratorHooksInterface(device.type()).getNewGenerator(device.index());
  gen.set_current_seed(seed);
  return gen;
}

// dropout(x) = x * keep / (1 - p); the scalar multiply rounds once in low precision.
at::Tensor apply_dropout(const at::Tensor& x, const LoraBranch& lora) {
  if (lora.dropout <= 0.0) return x;
  const at::Tensor keep = dropout_keep_mask(x.sizes(), lora.dropout, lora.dropout_seed, x.scalar_type(), x.device());
  return x.mul(1.0 / (1.0 - lora.dropout)).mul_(keep);
}

void check_lora_dtype(const Linear& linear, const at::Tensor& x) {
  const LoraBranch& lora = *linear.lora;
  QFT_CHECK(lora.A.scalar_type() == x.scalar_type() && lora.B.scalar_type() == x.scalar_type(),
            "{}: LoRA factors A {} / B {} with {} activations: the branch takes them in the compute dtype "
            "(cast once per step, LoraCompute)",
            linear.info().name, c10::toString(lora.A.scalar_type()), c10::toString(lora.B.scalar_type()),
            c10::toString(x.scalar_type()));
}

}  // namespace

uint64_t dropout_seed_for(uint64_t seed, int64_t layer, int projection) {
  return splitmix64(splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(layer)) ^ static_cast<uint64_t>(projection));
}

at::Tensor dropout_keep_mask(at::IntArrayRef shape, double p, uint64_t seed, at::ScalarType dtype, at::Device device) {
  at::Generator gen = generator_for(device, seed);
  return at::empty(shape, at::TensorOptions().dtype(dtype).device(device)).bernoulli_(1.0 - p, gen);
}

at::Tensor linear_forward(const Linear& linear, const at::Tensor& x, at::Tensor* xa) {
  const at::Tensor W = linear.weight->dense();
  const LoraBranch* lora = linear.lora ? &*linear.lora : nullptr;
  if (lora == nullptr) return at::mm(x, W.t());
  check_lora_dtype(linear, x);
  const at::Tensor a = at::mm(apply_dropout(x, *lora), lora->A.t());  // [N, r]
  // The memory-bound rank-r product writes y first; the compute-bound base GEMM then adds onto it
  // (beta = 1), where reading y hides behind the arithmetic.
  at::Tensor y = at::mm(a * lora->scaling, lora->B.t());
  y.addmm_(x, W.t());
  if (xa != nullptr) *xa = a;
  return y;
}

at::Tensor lora_input_projection(const Linear& linear, const at::Tensor& x) {
  if (!linear.lora) return at::Tensor();
  check_lora_dtype(linear, x);
  return at::mm(apply_dropout(x, *linear.lora), linear.lora->A.t());
}

at::Tensor linear_backward(const Linear& linear, const at::Tensor& dy, const at::Tensor& x, const at::Tensor& xa,
                           const LinearGrads& grads) {
  const LoraBranch* lora = linear.lora ? &*linear.lora : nullptr;
  if (grads.dW != nullptr) accumulate(*grads.dW, at::mm(dy.t(), x));
  // Only dx needs the base weight; a packed storage dequantizes it here again rather than keeping a
  // dense copy alive since forward.
  if (lora == nullptr) return grads.need_dx ? at::mm(dy, linear.weight->dense()) : at::Tensor();

  check_lora_dtype(linear, x);
  const at::Tensor& A = lora->A;
  const at::Tensor& B = lora->B;
  // y += s * a B^T with a = xd A^T: the scaling is applied on the small [N, r] side.
  if (grads.dB != nullptr) accumulate(*grads.dB, at::mm(dy.t(), xa), lora->scaling);
  const at::Tensor da = at::mm(dy, B).mul_(lora->scaling);  // [N, r]
  if (grads.dA != nullptr) accumulate(*grads.dA, at::mm(da.t(), apply_dropout(x, *lora)));
  if (!grads.need_dx) return at::Tensor();
  // As in forward: the rank-r term first (through the dropout: the same mask and 1/(1-p)), then the
  // base GEMM accumulates onto it.
  at::Tensor dx = at::mm(da, A);
  if (lora->dropout > 0.0) dx = apply_dropout(dx, *lora);
  return dx.addmm_(dy, linear.weight->dense());
}

}  // namespace qft::model::ops
