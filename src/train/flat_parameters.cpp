#include "train/flat_parameters.h"

#include <algorithm>

#include "core/error.h"

namespace qft::train {

FlatParameters::FlatParameters(const std::vector<std::pair<std::string, at::Tensor>>& tensors, at::Device device,
                               bool (*decays)(const std::string& name), int shards, FlatStorage storage) {
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
  numel_ = (offset + shards - 1) / shards * shards;
  QFT_CHECK(storage.only_shard < shards, "flat parameters: shard {} of {}", storage.only_shard, shards);
  stored_ = storage.only_shard < 0 ? parallel::Range{0, numel_}
                                   : parallel::split_evenly(numel_, shards)[static_cast<size_t>(storage.only_shard)];
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  params_ = at::zeros({stored_.size()}, f32);
  if (storage.gradients) grads_ = at::zeros({numel_}, f32);
  for (size_t i = 0; i < tensors.size(); ++i) {
    // Only the part of each tensor that falls into the stored range.
    const parallel::Range r = entries_[i].range;
    const int64_t begin = std::max(r.begin, stored_.begin), end = std::min(r.end, stored_.end);
    if (begin >= end) continue;
    params_.narrow(0, begin - stored_.begin, end - begin)
        .copy_(tensors[i].second.reshape({-1}).narrow(0, begin - r.begin, end - begin));
  }
}

at::Tensor FlatParameters::view(const at::Tensor& flat, size_t i) const {
  const Entry& e = entries_.at(i);
  QFT_CHECK(flat.defined(), "flat parameters: {} has no gradient buffer here (ZeRO stage 2/3)", e.name);
  // The parameter buffer starts at stored().begin; the gradient buffer always covers everything.
  const int64_t base = flat.numel() == numel_ ? 0 : stored_.begin;
  QFT_CHECK(e.range.begin >= base && e.range.end <= base + flat.numel(),
            "flat parameters: {} lies outside this rank's shard [{}, {})", e.name, base, base + flat.numel());
  return flat.narrow(0, e.range.begin - base, e.range.size()).view(e.shape);
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
