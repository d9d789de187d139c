#include "model/projection.h"

#include <fmt/format.h>

#include "core/error.h"

namespace qft::model {

const std::array<ProjectionInfo, kNumProjections>& projection_table() {
  static const std::array<ProjectionInfo, kNumProjections> table = {{
      {Projection::q, "q_proj", "self_attn.q_proj", ParallelStyle::column},
      {Projection::k, "k_proj", "self_attn.k_proj", ParallelStyle::column},
      {Projection::v, "v_proj", "self_attn.v_proj", ParallelStyle::column},
      {Projection::o, "o_proj", "self_attn.o_proj", ParallelStyle::row},
      {Projection::gate, "gate_proj", "mlp.gate_proj", ParallelStyle::column},
      {Projection::up, "up_proj", "mlp.up_proj", ParallelStyle::column},
      {Projection::down, "down_proj", "mlp.down_proj", ParallelStyle::row},
  }};
  return table;
}

const ProjectionInfo& projection_info(Projection p) {
  const int i = static_cast<int>(p);
  QFT_CHECK(i >= 0 && i < kNumProjections, "invalid projection {}", i);
  return projection_table()[i];
}

const InputGroupInfo& input_group_info(InputGroup g) {
  static const std::array<InputGroupInfo, kNumInputGroups> groups = {{
      {InputGroup::attention, {Projection::q, Projection::k, Projection::v}},
      {InputGroup::mlp, {Projection::gate, Projection::up}},
  }};
  const int i = static_cast<int>(g);
  QFT_CHECK(i >= 0 && i < kNumInputGroups, "invalid input group {}", i);
  return groups[i];
}

std::optional<Projection> projection_from_name(const std::string& name) {
  for (const ProjectionInfo& info : projection_table()) {
    if (name == info.name || name == info.module) return info.projection;
  }
  return std::nullopt;
}

std::array<int64_t, 2> projection_shape(const Qwen3Config& c, Projection p) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  switch (p) {
    case Projection::q: return {c.q_size(), H};
    case Projection::k: return {c.kv_size(), H};
    case Projection::v: return {c.kv_size(), H};
    case Projection::o: return {H, c.q_size()};
    case Projection::gate: return {I, H};
    case Projection::up: return {I, H};
    case Projection::down: return {H, I};
  }
  fail("invalid projection {}", static_cast<int>(p));
}

std::string projection_module_path(int64_t layer, Projection p) {
  return fmt::format("model.layers.{}.{}", layer, projection_info(p).module);
}

bool is_projection_weight_key(const std::string& key) {
  const std::string suffix = "_proj.weight";
  return key.rfind("model.layers.", 0) == 0 && key.size() > suffix.size() &&
         key.compare(key.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace qft::model
