// ZeRO's per-layer machinery (src/parallel/zero.h) under 1, 2 and 4 ranks with rank-valued inputs: the
// gradient sums of every stage, and the layer gathers of stage 3, against the unsharded computation.
// The flat buffer is small and uneven, so some ranks' shards miss whole layers (empty parts).
#include <gtest/gtest.h>

#include "core/error.h"
#include "parallel/zero.h"
#include "parallel_test_support.h"

using namespace qft::parallel;
using qft::test::world;

namespace {

const auto f32 = at::TensorOptions().dtype(at::kFloat);

// embed (4) | layer 0 (5) | layer 1 (7) | layer 2 (3) | norm (2) | padding to a multiple of the group.
struct Fixture {
  std::vector<std::pair<std::string, Range>> entries;
  int64_t numel = 0;
  Fixture(int size) {
    int64_t at = 0;
    auto add = [&](const std::string& name, int64_t n) {
      entries.emplace_back(name, Range{at, at + n});
      at += n;
    };
    add("model.embed_tokens.weight", 4);
    add("model.layers.0.self_attn.q_proj.weight", 2);
    add("model.layers.0.mlp.down_proj.weight", 3);
    add("model.layers.1.self_attn.q_proj.weight", 7);
    add("model.layers.2.input_layernorm.weight", 3);
    add("model.norm.weight", 2);
    numel = (at + size - 1) / size * size;
  }
};

// Rank r's gradient of micro-batch m at flat index j (zero in the padding).
at::Tensor rank_gradient(int64_t numel, int64_t real, int rank, int micro_batch) {
  at::Tensor g = (at::arange(numel, f32) + 1) * (rank + 1) + 100.0 * micro_batch;
  g.narrow(0, real, numel - real).zero_();
  return g;
}

at::Tensor expected_sum(int64_t numel, int64_t real, int size, int micro_batches) {
  at::Tensor sum = at::zeros({numel}, f32);
  for (int r = 0; r < size; ++r)
    for (int m = 0; m < micro_batches; ++m) sum += rank_gradient(numel, real, r, m);
  return sum;
}

}  // namespace

TEST(Zero, ShardPartsTileTheSpanInRankOrder) {
  const std::vector<Range> shards = {{0, 4}, {4, 8}, {8, 12}};
  const auto parts = shard_parts(shards, Range{3, 9});
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0], (Range{0, 1}));
  EXPECT_EQ(parts[1], (Range{1, 5}));
  EXPECT_EQ(parts[2], (Range{5, 6}));
  const auto missed = shard_parts(shards, Range{5, 7});  // inside rank 1's shard only
  EXPECT_EQ(missed[0], (Range{0, 0}));
  EXPECT_EQ(missed[1], (Range{0, 2}));
  EXPECT_EQ(missed[2], (Range{2, 2}));
}

TEST(Zero, LayoutGroupsEntriesByLayerAndKeepsTheRestResident) {
  const Fixture f(4);
  const LayerLayout layout = LayerLayout::from_entries(f.entries, f.numel, 3);
  ASSERT_EQ(layout.layers.size(), 3u);
  EXPECT_EQ(layout.layers[0], (Range{4, 9}));
  EXPECT_EQ(layout.layers[1], (Range{9, 16}));
  EXPECT_EQ(layout.layers[2], (Range{16, 19}));
  ASSERT_EQ(layout.resident.size(), 2u);
  EXPECT_EQ(layout.resident[0], (Range{0, 4}));
  EXPECT_EQ(layout.resident[1], (Range{19, f.numel}));
  EXPECT_EQ(layout.max_layer_size(), 7);

  auto scattered = f.entries;
  std::swap(scattered[2].second, scattered[3].second);  // layer 0's tensors around layer 1's
  try {
    LayerLayout::from_entries(scattered, f.numel, 3);
    FAIL() << "a layer split in two was accepted";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not follow the other tensors of layer"), std::string::npos) << e.what();
  }
  try {
    LayerLayout::from_entries(f.entries, f.numel, 4);
    FAIL() << "a missing layer was accepted";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor of layer 3"), std::string::npos) << e.what();
  }
}

// One step of two micro-batches as the model runs it: the resident gradients (lm_head) first, then the
// layers last to first, each between before_backward and layer_done.
class ZeroStage : public ::testing::TestWithParam<int> {};

TEST_P(ZeroStage, GradientSumsEqualTheUnshardedSum) {
  const int stage = GetParam();
  const int size = world().size(), rank = world().rank();
  const Fixture f(size);
  const int64_t real = f.entries.back().second.end;
  const LayerLayout layout = LayerLayout::from_entries(f.entries, f.numel, 3);
  const std::vector<Range> shards = split_evenly(f.numel, size);
  at::Tensor full = at::zeros({f.numel}, f32);
  std::unique_ptr<LayerSlots> slots;
  if (stage >= 2) slots = std::make_unique<LayerSlots>(layout, f32, /*with_resident=*/true);
  // Where the "model" writes flat range r.
  auto destination = [&](Range r) { return stage >= 2 ? slots->view(r) : full.narrow(0, r.begin, r.size()); };

  // Buckets of 0 elements: one per layer; 10: layers 2 and 1 together (3 + 7), layer 0 alone; 1000: all.
  struct Variant { bool overlap; int64_t bucket_elements; };
  for (const Variant v : {Variant{true, 0}, Variant{true, 10}, Variant{true, 1000}, Variant{false, 0}}) {
    const bool overlap = v.overlap;
    if (stage >= 2 && (!overlap || v.bucket_elements > 0)) continue;  // per layer, overlap implied
    full.zero_();
    GradientReducer reducer(world(), stage, shards, layout, stage >= 2 ? at::Tensor() : full, slots.get(), overlap,
                            v.bucket_elements);
    reducer.start_step();
    for (int m = 0; m < 2; ++m) {
      reducer.start_micro_batch(m == 1);
      const at::Tensor g = rank_gradient(f.numel, real, rank, m);
      for (const Range& r : layout.resident) destination(r).add_(g.narrow(0, r.begin, r.size()));
      for (int64_t layer = 2; layer >= 0; --layer) {
        reducer.before_backward(layer);
        const Range r = layout.layers[layer];
        destination(r).add_(g.narrow(0, r.begin, r.size()));
        reducer.layer_done(layer);
      }
    }
    reducer.finish();
    const at::Tensor expected = expected_sum(f.numel, real, size, 2);
    const Range own = shards[rank];
    if (stage == 0) {
      EXPECT_TRUE(at::equal(full, expected)) << "overlap " << overlap << " bucket " << v.bucket_elements << "\n"
                                             << full << expected;
    } else if (stage == 1) {
      EXPECT_TRUE(at::equal(full.narrow(0, own.begin, own.size()), expected.narrow(0, own.begin, own.size())))
          << "overlap " << overlap << " bucket " << v.bucket_elements;
    } else {
      EXPECT_TRUE(at::equal(reducer.shard(), expected.narrow(0, own.begin, own.size())))
          << reducer.shard() << expected.narrow(0, own.begin, own.size());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, ZeroStage, ::testing::Values(0, 1, 2, 3));

TEST(Zero, ARankWithoutMicroBatchesStillJoinsEveryLayersReduction) {
  // An epoch's last step can leave a rank no micro-batch: it reduces zeros, in the others' order.
  const int size = world().size(), rank = world().rank();
  const Fixture f(size);
  const int64_t real = f.entries.back().second.end;
  const LayerLayout layout = LayerLayout::from_entries(f.entries, f.numel, 3);
  const std::vector<Range> shards = split_evenly(f.numel, size);
  for (int stage : {0, 1}) {
    at::Tensor full = at::zeros({f.numel}, f32);
    GradientReducer reducer(world(), stage, shards, layout, full, nullptr, /*overlap=*/true, /*bucket_elements=*/10);
    reducer.start_step();
    if (rank != size - 1) {  // the last rank has nothing this step
      const at::Tensor g = rank_gradient(f.numel, real, rank, 0);
      full.add_(g);
      for (int64_t layer = 2; layer >= 0; --layer) reducer.layer_done(layer);
    }
    reducer.finish();
    at::Tensor expected = at::zeros({f.numel}, f32);
    for (int r = 0; r + 1 < size; ++r) expected += rank_gradient(f.numel, real, r, 0);
    const Range own = stage == 0 ? Range{0, f.numel} : shards[rank];
    EXPECT_TRUE(at::equal(full.narrow(0, own.begin, own.size()), expected.narrow(0, own.begin, own.size())))
        << "stage " << stage;
  }
}

TEST(Zero, LayerGathersGiveEveryLayerWholeInBothPassesAndFollowUpdates) {
  const int size = world().size(), rank = world().rank();
  const Fixture f(size);
  const LayerLayout layout = LayerLayout::from_entries(f.entries, f.numel, 3);
  const std::vector<Range> shards = split_evenly(f.numel, size);
  at::Tensor whole = at::arange(f.numel, f32) * 1.5 + 1;
  // Each rank holds only its own shard of the buffer.
  at::Tensor own = whole.narrow(0, shards[rank].begin, shards[rank].size()).clone();
  LayerSlots slots(layout, f32, /*with_resident=*/true);
  LayerWeightGatherer gatherer(world(), shards, own, slots);
  auto check_layer = [&](int64_t layer, const char* when) {
    const Range r = layout.layers[layer];
    EXPECT_TRUE(at::equal(slots.slot_of(layer), whole.narrow(0, r.begin, r.size()))) << when << " layer " << layer;
  };
  for (int micro_batch = 0; micro_batch < 2; ++micro_batch) {
    for (int64_t layer = 0; layer < 3; ++layer) {
      gatherer.before_layer(layer, qft::model::LayerPass::forward);
      check_layer(layer, "forward");
    }
    for (int64_t layer = 2; layer >= 0; --layer) {
      gatherer.before_layer(layer, qft::model::LayerPass::backward);
      check_layer(layer, "backward");
    }
  }
  gatherer.gather_resident();
  for (size_t k = 0; k < layout.resident.size(); ++k) {
    const Range r = layout.resident[k];
    EXPECT_TRUE(at::equal(slots.resident(k), whole.narrow(0, r.begin, r.size()))) << "resident " << k;
  }
  // An optimizer step changes the shards: after invalidate() the slots show the new values.
  whole.mul_(-2);
  own.mul_(-2);
  gatherer.invalidate();
  for (int64_t layer = 0; layer < 3; ++layer) {
    gatherer.before_layer(layer, qft::model::LayerPass::forward);
    check_layer(layer, "after the update");
  }
}
