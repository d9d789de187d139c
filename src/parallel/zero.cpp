#include "parallel/zero.h"

#include <algorithm>
#include <regex>

#include "core/error.h"

namespace qft::parallel {

std::vector<Range> shard_parts(const std::vector<Range>& shards, Range span) {
  std::vector<Range> out;
  out.reserve(shards.size());
  for (const Range& shard : shards) {
    const int64_t begin = std::clamp(shard.begin, span.begin, span.end);
    const int64_t end = std::clamp(shard.end, span.begin, span.end);
    out.push_back(Range{begin - span.begin, end - span.begin});
  }
  return out;
}

std::unique_ptr<Work> gather_span_async(Communicator& data, const std::vector<Range>& shards, const at::Tensor& own,
                                        Range span, at::Tensor dest) {
  const std::vector<Range> parts = shard_parts(shards, span);
  const Range mine = parts[data.rank()];
  if (mine.size() > 0)
    dest.narrow(0, mine.begin, mine.size())
        .copy_(own.narrow(0, span.begin + mine.begin - shards[data.rank()].begin, mine.size()));
  return data.all_gather_async(dest, parts);
}

void add_own_part(Communicator& data, const std::vector<Range>& shards, Range span, const at::Tensor& reduced,
                  at::Tensor& own_shard) {
  const Range mine = shard_parts(shards, span)[data.rank()];
  if (mine.size() == 0) return;
  own_shard.narrow(0, span.begin + mine.begin - shards[data.rank()].begin, mine.size())
      .add_(reduced.narrow(0, mine.begin, mine.size()));
}

int64_t LayerLayout::max_layer_size() const {
  int64_t m = 0;
  for (const Range& r : layers) m = std::max(m, r.size());
  return m;
}

LayerLayout LayerLayout::from_entries(const std::vector<std::pair<std::string, Range>>& entries, int64_t numel,
                                      int64_t num_layers) {
  static const std::regex layer_pattern(R"(\.layers\.(\d+)\.)");
  LayerLayout layout;
  layout.numel = numel;
  layout.layers.assign(static_cast<size_t>(num_layers), Range{-1, -1});
  for (const auto& [name, range] : entries) {
    std::smatch match;
    if (!std::regex_search(name, match, layer_pattern)) continue;
    const int64_t i = std::stoll(match[1].str());
    QFT_CHECK(i < num_layers, "ZeRO layout: {} names layer {} of a model with {} layers", name, i, num_layers);
    Range& r = layout.layers[static_cast<size_t>(i)];
    if (r.begin < 0) {
      r = range;
    } else {
      QFT_CHECK(range.begin == r.end, "ZeRO layout: {} does not follow the other tensors of layer {}", name, i);
      r.end = range.end;
    }
  }
  std::vector<Range> sorted;
  for (int64_t i = 0; i < num_layers; ++i) {
    QFT_CHECK(layout.layers[i].begin >= 0, "ZeRO layout: no tensor of layer {}", i);
    sorted.push_back(layout.layers[i]);
  }
  std::sort(sorted.begin(), sorted.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  int64_t at = 0;
  for (const Range& r : sorted) {
    if (r.begin > at) layout.resident.push_back(Range{at, r.begin});
    at = r.end;
  }
  if (numel > at) layout.resident.push_back(Range{at, numel});
  return layout;
}

int64_t LayerLayout::layer_containing(Range r) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (r.begin >= layers[i].begin && r.end <= layers[i].end) return static_cast<int64_t>(i);
  return -1;
}

LayerSlots::LayerSlots(LayerLayout layout, at::TensorOptions options, bool with_resident)
    : layout_(std::move(layout)) {
  for (int s = 0; s < 2; ++s) slots_.push_back(at::zeros({layout_.max_layer_size()}, options));
  if (with_resident)
    for (const Range& r : layout_.resident) resident_.push_back(at::zeros({r.size()}, options));
}

at::Tensor LayerSlots::slot_of(int64_t layer) const {
  return slots_[layer % 2].narrow(0, 0, layout_.layers.at(static_cast<size_t>(layer)).size());
}

at::Tensor LayerSlots::view(Range r) const {
  const int64_t layer = layout_.layer_containing(r);
  if (layer >= 0) return slot_of(layer).narrow(0, r.begin - layout_.layers[layer].begin, r.size());
  for (size_t k = 0; k < layout_.resident.size(); ++k) {
    const Range& l = layout_.resident[k];
    if (r.begin >= l.begin && r.end <= l.end) {
      QFT_CHECK(k < resident_.size(), "ZeRO slots: [{}, {}) is resident, and these slots keep no resident buffers",
                r.begin, r.end);
      return resident_[k].narrow(0, r.begin - l.begin, r.size());
    }
  }
  fail("ZeRO slots: [{}, {}) lies in no single layer or resident range", r.begin, r.end);
}

GradientReducer::GradientReducer(Communicator& data, int zero_stage, std::vector<Range> shards, LayerLayout layout,
                                 at::Tensor full_grads, LayerSlots* slots, bool overlap, int64_t bucket_elements)
    : data_(data), stage_(zero_stage), shards_(std::move(shards)), layout_(std::move(layout)),
      full_grads_(std::move(full_grads)), slots_(slots), overlap_(overlap || zero_stage >= 2) {
  // Buckets from the last layer down: a bucket grows while it is smaller than bucket_elements and the next
  // layer's range ends where the bucket's begins (one contiguous span for one collective).
  bucket_of_layer_.assign(layout_.layers.size(), -1);
  for (int64_t layer = static_cast<int64_t>(layout_.layers.size()) - 1; layer >= 0; --layer) {
    const Range r = layout_.layers[static_cast<size_t>(layer)];
    const bool joins = !buckets_.empty() && buckets_.back().span.size() < bucket_elements &&
                       r.end == buckets_.back().span.begin;
    if (joins) {
      buckets_.back().span.begin = r.begin;
      buckets_.back().lowest = layer;
    } else {
      buckets_.push_back(Bucket{layer, r});
    }
    bucket_of_layer_[static_cast<size_t>(layer)] = static_cast<int64_t>(buckets_.size()) - 1;
  }
  QFT_CHECK(zero_stage >= 0 && zero_stage <= 3, "ZeRO stage {}", zero_stage);
  QFT_CHECK(static_cast<int>(shards_.size()) == data_.size(), "ZeRO: {} shards for {} ranks", shards_.size(),
            data_.size());
  if (stage_ >= 2) {
    QFT_CHECK(slots_ != nullptr, "ZeRO stage {} needs gradient slots", stage_);
    const Range own = shards_[data_.rank()];
    shard_ = at::zeros({own.size()}, slots_->slot_of(0).options());
  } else {
    QFT_CHECK(full_grads_.defined() && full_grads_.numel() == layout_.numel,
              "ZeRO stage {}: the flat gradient buffer has {} elements, the layout {}", stage_,
              full_grads_.defined() ? full_grads_.numel() : 0, layout_.numel);
  }
}

void GradientReducer::start_step() {
  last_micro_batch_ = true;
  started_.assign(buckets_.size(), false);
  if (stage_ < 2) return;
  shard_.zero_();
  for (size_t k = 0; k < layout_.resident.size(); ++k) slots_->resident(k).zero_();
}

void GradientReducer::reduce_range(const at::Tensor& buffer_of_span, Range span,
                                   std::vector<std::unique_ptr<Work>>& out) {
  at::Tensor buffer = buffer_of_span;
  if (stage_ == 0) {
    out.push_back(data_.all_reduce_sum_async(buffer));
  } else {
    out.push_back(data_.reduce_scatter_sum_async(buffer, shard_parts(shards_, span)));
  }
}

void GradientReducer::drain(Pending& pending) {
  if (pending.layer < 0) return;
  pending.work->wait();
  // The reduce-scatter left this rank's part of the layer's sum in its place in the slot.
  add_own_part(data_, shards_, layout_.layers[pending.layer], slots_->slot_of(pending.layer), shard_);
  pending.layer = -1;
  pending.work.reset();
}

void GradientReducer::before_backward(int64_t layer) {
  if (stage_ < 2) return;
  drain(pending_[layer % 2]);
  slots_->slot_of(layer).zero_();
}

void GradientReducer::layer_done(int64_t layer) {
  const Range span = layout_.layers.at(static_cast<size_t>(layer));
  if (stage_ >= 2) {
    std::vector<std::unique_ptr<Work>> works;
    reduce_range(slots_->slot_of(layer), span, works);
    Pending& p = pending_[layer % 2];
    QFT_CHECK(p.layer < 0, "ZeRO: layer {}'s slot still holds layer {}'s gradients", layer, p.layer);
    p.layer = layer;
    p.work = std::move(works.front());
    return;
  }
  // A bucket starts once backward has left its lowest layer (the last of it that backward reaches).
  const int64_t b = bucket_of_layer_.at(static_cast<size_t>(layer));
  if (overlap_ && last_micro_batch_ && buckets_[b].lowest == layer && !started_[b]) {
    started_[b] = true;
    const Range bucket = buckets_[b].span;
    reduce_range(full_grads_.narrow(0, bucket.begin, bucket.size()), bucket, full_works_);
  }
}

void GradientReducer::finish() {
  if (stage_ >= 2) {
    for (Pending& p : pending_) drain(p);
    for (size_t k = 0; k < layout_.resident.size(); ++k) {
      const Range span = layout_.resident[k];
      std::vector<std::unique_ptr<Work>> works;
      reduce_range(slots_->resident(k), span, works);
      works.front()->wait();
      add_own_part(data_, shards_, span, slots_->resident(k), shard_);
    }
    return;
  }
  if (overlap_) {
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (started_[b]) continue;
      const Range span = buckets_[b].span;
      reduce_range(full_grads_.narrow(0, span.begin, span.size()), span, full_works_);
    }
    for (const Range& span : layout_.resident) reduce_range(full_grads_.narrow(0, span.begin, span.size()), span, full_works_);
  } else if (stage_ == 0) {
    full_works_.push_back(data_.all_reduce_sum_async(full_grads_));
  } else {
    full_works_.push_back(data_.reduce_scatter_sum_async(full_grads_, shards_));
  }
  for (auto& work : full_works_) work->wait();
  full_works_.clear();
}

LayerWeightGatherer::LayerWeightGatherer(Communicator& data, std::vector<Range> shards, at::Tensor own,
                                         LayerSlots& slots)
    : data_(data), shards_(std::move(shards)), own_(std::move(own)), slots_(slots) {
  QFT_CHECK(static_cast<int>(shards_.size()) == data_.size(), "ZeRO-3: {} shards for {} ranks", shards_.size(),
            data_.size());
  QFT_CHECK(own_.dim() == 1 && own_.numel() == shards_[data_.rank()].size(),
            "ZeRO-3: this rank's shard has {} elements, its range {}", own_.numel(), shards_[data_.rank()].size());
}

void LayerWeightGatherer::start_gather(int64_t layer) {
  const int s = static_cast<int>(layer % 2);
  if (holds_[s] == layer) return;
  // The slot's previous gather must be complete before the slot is written again.
  if (gathering_[s]) gathering_[s]->wait();
  const Range span = slots_.layout().layers.at(static_cast<size_t>(layer));
  gathering_[s] = gather_span_async(data_, shards_, own_, span, slots_.slot_of(layer));
  holds_[s] = layer;
}

void LayerWeightGatherer::before_layer(int64_t layer, model::LayerPass pass) {
  start_gather(layer);
  const int s = static_cast<int>(layer % 2);
  if (gathering_[s]) {
    gathering_[s]->wait();
    gathering_[s].reset();
  }
  const int64_t next = pass == model::LayerPass::forward ? layer + 1 : layer - 1;
  if (next >= 0 && next < static_cast<int64_t>(slots_.layout().layers.size())) start_gather(next);
}

void LayerWeightGatherer::invalidate() {
  for (int s = 0; s < 2; ++s) {
    if (gathering_[s]) gathering_[s]->wait();
    gathering_[s].reset();
    holds_[s] = -1;
  }
}

void LayerWeightGatherer::gather_resident() {
  for (size_t k = 0; k < slots_.layout().resident.size(); ++k) {
    gather_span_async(data_, shards_, own_, slots_.layout().resident[k], slots_.resident(k))->wait();
  }
}

model::LayerHooks LayerWeightGatherer::hooks() {
  model::LayerHooks h;
  h.before_layer = [this](int64_t layer, model::LayerPass pass) { before_layer(layer, pass); };
  return h;
}

}  // namespace qft::parallel
