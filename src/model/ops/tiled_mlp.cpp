#include "model/ops/tiled_mlp.h"

#include <algorithm>

#include "core/error.h"
#include "model/ops/swiglu.h"

namespace qft::model::ops {
namespace {

// The projection as one chunk uses it: its dropout mask drawn from a seed of its own (the chunk's first
// row identifies it), the same in forward and in backward.
Linear for_chunk(const Linear& linear, int64_t first_row) {
  if (!linear.lora || linear.lora->dropout <= 0.0) return linear;
  Linear out = linear;
  out.lora->dropout_seed = dropout_seed_for(linear.lora->dropout_seed, first_row, /*projection=*/-1);
  return out;
}

// The group {gate, up} as one chunk uses it: each member through for_chunk; `members` owns the copies the
// returned group points to.
LinearGroup group_for_chunk(const LinearGroup& group, int64_t first_row, std::vector<Linear>& members) {
  members.clear();
  for (const Linear* linear : group.members) members.push_back(for_chunk(*linear, first_row));
  LinearGroup out;
  out.stacked_A = group.stacked_A;
  for (const Linear& linear : members) out.members.push_back(&linear);
  return out;
}

int64_t out_features(const Linear& linear) { return linear.weight->shape()[0]; }

}  // namespace

int64_t tiled_mlp_auto_shards(int64_t rows, int64_t hidden) {
  QFT_CHECK(rows >= 0 && hidden > 0, "tiled MLP: {} rows, hidden size {}", rows, hidden);
  return std::max<int64_t>(1, (rows + hidden - 1) / hidden);
}

int64_t tiled_mlp_chunk_rows(int64_t rows, int64_t num_shards) {
  QFT_CHECK(num_shards >= 1, "tiled MLP: num_shards must be at least 1, got {}", num_shards);
  return std::max<int64_t>(1, (rows + num_shards - 1) / num_shards);
}

at::Tensor tiled_mlp_forward(const LinearGroup& gate_up, const Linear& down, const at::Tensor& h,
                             int64_t num_shards) {
  QFT_CHECK(gate_up.members.size() == 2, "tiled MLP: the gate/up group has {} members", gate_up.members.size());
  const int64_t N = h.size(0), rows = tiled_mlp_chunk_rows(N, num_shards);
  at::Tensor y = at::empty({N, out_features(down)}, h.options());
  std::vector<Linear> members;
  for (int64_t begin = 0; begin < N; begin += rows) {
    const int64_t n = std::min(rows, N - begin);
    const at::Tensor hc = h.narrow(0, begin, n);
    const std::vector<at::Tensor> gu = lora_group_forward(group_for_chunk(gate_up, begin, members), hc, nullptr);
    const at::Tensor act = swiglu_forward(gu[0], gu[1]);
    y.narrow(0, begin, n).copy_(linear_forward(for_chunk(down, begin), act, nullptr));
  }
  return y;
}

at::Tensor tiled_mlp_backward(const LinearGroup& gate_up, const Linear& down, const at::Tensor& dy, const at::Tensor& h,
                              int64_t num_shards, const TiledMlpGrads& grads) {
  QFT_CHECK(gate_up.members.size() == 2, "tiled MLP: the gate/up group has {} members", gate_up.members.size());
  const int64_t N = h.size(0), rows = tiled_mlp_chunk_rows(N, num_shards);
  QFT_CHECK(dy.size(0) == N, "tiled MLP backward: dy has {} rows, the input {}", dy.size(0), N);
  LinearGrads g_down = grads.down;
  g_down.need_dx = true;
  const std::vector<LinearGrads> g_gate_up = {grads.gate, grads.up};
  at::Tensor dh = at::empty_like(h);
  std::vector<Linear> members;
  for (int64_t begin = 0; begin < N; begin += rows) {
    const int64_t n = std::min(rows, N - begin);
    const LinearGroup group = group_for_chunk(gate_up, begin, members);
    const Linear down_c = for_chunk(down, begin);
    const at::Tensor hc = h.narrow(0, begin, n);
    // The chunk's forward again (bitwise the forward's values), then its backward in the order of the
    // whole-sequence one (decoder_layer_backward).
    std::vector<at::Tensor> xa_gate_up(2);
    const std::vector<at::Tensor*> xa_slots = {&xa_gate_up[0], &xa_gate_up[1]};
    const std::vector<at::Tensor> gu = lora_group_forward(group, hc, &xa_slots);
    const at::Tensor act = swiglu_forward(gu[0], gu[1]);
    const at::Tensor xa_d = lora_input_projection(down_c, act);  // undefined without LoRA
    const at::Tensor dact = linear_backward(down_c, dy.narrow(0, begin, n), act, xa_d, g_down);
    const auto [dgate, dup] = swiglu_backward(dact, gu[0], gu[1]);
    dh.narrow(0, begin, n).copy_(lora_group_backward(group, {dgate, dup}, hc, xa_gate_up, g_gate_up, true));
  }
  return dh;
}

}  // namespace qft::model::ops
