#include "train/flat_parameters.h"

#include <algorithm>

#include "core/error.h"

namespace qft::train {

FlatParameters::FlatParameters(const std::vector<std::pair<std::string, at::Tensor>>& tensors, at::Device device,
                               bool (*decays)(const std::string& name), int shards) {
  QFT_CHECK(shards >= 1, "flat parameters: {} shards", shards);
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    Entry e;
    e.name = name;
    e.shape = t.sizes().vec();
    e.range = parallel::Range{offset, offset + t.numel()};
    e.decay = decays(name);
    offset += t.numel();
    entries_.push_back(std::move(e));
  }
  const int64_t padded = (offset + shards - 1) / shards * shards;
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  params_ = at::zeros({padded}, f32);
  grads_ = at::zeros({padded}, f32);
  for (size_t i = 0; i < tensors.size(); ++i) param(i).copy_(tensors[i].second);
}

at::Tensor FlatParameters::view(const at::Tensor& flat, size_t i) const {
  const Entry& e = entries_.at(i);
  return flat.narrow(0, e.range.begin, e.range.size()).view(e.shape);
}

std::vector<parallel::Range> FlatParameters::no_decay_ranges(parallel::Range owned) const {
  std::vector<parallel::Range> out;
  for (const Entry& e : entries_) {
    if (e.decay) continue;
    const int64_t begin = std::max(e.range.begin, owned.begin), end = std::min(e.range.end, owned.end);
    if (begin < end) out.push_back({begin, end});
  }
  return out;
}

}  // namespace qft::train
