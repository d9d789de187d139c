// Tensor parallelism against the unsharded computation, under 1, 2 and 4 ranks: the mapping pairs with
// rank-valued inputs, then every sharded piece (column and row linear with LoRA, a whole decoder layer,
// the vocab-parallel embedding and cross-entropy) forward and backward on the same float64 inputs as the
// model's own unsharded ops, for T = world size and, under 4 ranks, for TP 2 × DP 2 groups (each data
// rank with its own inputs).
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/remove_tree.h"
#include "io/safetensors.h"
#include "model/decoder_layer.h"
#include "model/nf4_weight.h"
#include "model/ops/attention.h"
#include "model/ops/cross_entropy.h"
#include "model/ops/embedding.h"
#include "model/ops/linear.h"
#include "model/ops/rope.h"
#include "model/qwen3_model.h"
#include "parallel/rank_grid.h"
#include "parallel/tensor_parallel.h"
#include "parallel/tp_model.h"
#include "parallel/tp_mappings.h"
#include "parallel/tp_sharding.h"
#include "parallel/vocab_parallel.h"
#include "parallel_test_support.h"

using namespace qft::parallel;
using namespace qft::model;
using qft::test::world;

namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);
const auto i64 = at::TensorOptions().dtype(at::kLong);
constexpr double kTol = 1e-12;

// max |a - b| / max |b|.
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  const double scale = b.abs().max().item<double>();
  const double diff = (a - b).abs().max().item<double>();
  return scale > 0 ? diff / scale : diff;
}
#define EXPECT_CLOSE(a, b, what) EXPECT_LE(rel_err((a), (b)), kTol) << (what)

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// The tensor-parallel groups to test on: the whole world as one group, and under 4 ranks TP 2 × DP 2.
// `data` is the rank's data coordinate: inputs derive from it, so data-parallel groups see different data.
struct TpSetup {
  std::string name;
  Communicator* tp = nullptr;
  int data = 0;
  ParallelGroups groups;
};

std::vector<std::unique_ptr<TpSetup>> tp_setups() {
  std::vector<std::unique_ptr<TpSetup>> out;
  auto whole = std::make_unique<TpSetup>();
  whole->name = fmt::format("T = {}", world().size());
  whole->tp = &world();
  out.push_back(std::move(whole));
  if (world().size() == 4) {
    const RankGrid grid(4, 2);
    auto s = std::make_unique<TpSetup>();
    s->name = "T = 2 x DP 2";
    s->groups = make_parallel_groups(world(), grid);
    s->tp = s->groups.tensor.get();
    s->data = grid.coordinates(world().rank()).data;
    out.push_back(std::move(s));
  }
  return out;
}

// hidden 32, 8 query heads and 4 KV heads of head_dim 8, intermediate 48, vocabulary 96: every split
// dimension divides by 4.
Qwen3Config tiny_config(int64_t layers = 1, bool tied = false) {
  nlohmann::json j = {{"model_type", "qwen3"},      {"vocab_size", 96},          {"hidden_size", 32},
                      {"intermediate_size", 48},    {"num_hidden_layers", layers}, {"num_attention_heads", 8},
                      {"num_key_value_heads", 4},   {"head_dim", 8},             {"rms_norm_eps", 1e-6},
                      {"rope_theta", 10000.0},      {"tie_word_embeddings", tied}};
  return Qwen3Config::from_json(j, "tiny-config");
}

at::Tensor randn(at::IntArrayRef shape, uint64_t seed, double scale = 1.0) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return at::normal(0.0, scale, shape, gen, f64);
}

// Weights with non-trivial norms, LoRA on all seven projections with B != 0 (so A's gradients are not 0).
Qwen3Weights tiny_weights(const Qwen3Config& c, uint64_t seed) {
  Qwen3Weights w = Qwen3Weights::random(c, seed, 0.1, at::kDouble);
  for (auto& [name, t] : w.named_tensors(c))
    if (name.find("norm") != std::string::npos) t.add_(randn(t.sizes(), seed + t.numel(), 0.2));
  return w;
}

LoraWeights tiny_lora(const Qwen3Config& c, uint64_t seed, double dropout = 0.0,
                      std::vector<Projection> targets = {Projection::q, Projection::k, Projection::v, Projection::o,
                                                         Projection::gate, Projection::up, Projection::down}) {
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 8;
  lc.lora_dropout = dropout;
  lc.target_modules = targets;
  LoraWeights l = LoraWeights::init(c, lc, seed);
  uint64_t s = seed;
  for (auto& layer : l.layers)
    for (auto& pair : layer)
      if (pair.defined()) {
        pair.A = pair.A.to(at::kDouble);
        pair.B = randn(pair.B.sizes(), ++s, 0.3);
      }
  return l;
}

// The LoRA pair of `p` of a full projection as a Linear with its branch attached.
Linear with_lora(const Linear& base, const LoraPair& pair, double dropout, uint64_t seed) {
  Linear l = base;
  LoraBranch b;
  b.A = pair.A;
  b.B = pair.B;
  b.scaling = 2.0;
  b.dropout = dropout;
  b.dropout_seed = seed;
  l.lora = b;
  return l;
}

// Rank r's tensor in the mapping tests: rank-valued, so a misplaced or missing contribution shows.
at::Tensor rank_valued(at::IntArrayRef shape, int rank) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return (at::arange(n, f64) + 1000.0 * (rank + 1)).view(shape);
}

}  // namespace

// ---- the mapping pairs ---------------------------------------------------------------------------

TEST(TpMappings, CopyToTpAndReduceFromTpAreEachOthersTranspose) {
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    at::Tensor expected_sum = at::zeros({3, 5}, f64);
    for (int q = 0; q < T; ++q) expected_sum += rank_valued({3, 5}, q);

    const at::Tensor x = rank_valued({3, 5}, r);
    EXPECT_TRUE(at::equal(copy_to_tp_forward(x), x));
    EXPECT_TRUE(at::equal(copy_to_tp_backward(x.clone(), tp), expected_sum));
    EXPECT_TRUE(at::equal(reduce_from_tp_forward(x.clone(), tp), expected_sum));
    EXPECT_TRUE(at::equal(reduce_from_tp_backward(x), x));
    // A non-contiguous partial sum is summed too.
    EXPECT_TRUE(at::equal(reduce_from_tp_forward(x.t(), tp), expected_sum.t()));
  }
}

TEST(TpMappings, GatherAndScatterAlongTheLastDimension) {
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    std::vector<at::Tensor> parts;
    for (int q = 0; q < T; ++q) parts.push_back(rank_valued({2, 3, 4}, q));
    const at::Tensor whole = at::cat(parts, -1);  // [2, 3, 4T]

    EXPECT_TRUE(at::equal(gather_from_tp_forward(parts[r], tp), whole));
    EXPECT_TRUE(at::equal(gather_from_tp_backward(whole, tp), parts[r]));
    EXPECT_TRUE(at::equal(scatter_to_tp_forward(whole, tp), parts[r]));
    EXPECT_TRUE(at::equal(scatter_to_tp_backward(parts[r], tp), whole));
    if (T > 1) {
      const std::string e = error_of([&] { scatter_to_tp_forward(at::zeros({2, 4 * T + 1}, f64), tp); });
      EXPECT_NE(e.find("does not split evenly into " + std::to_string(T)), std::string::npos) << e;
    }
  }
}

TEST(TpMappings, SequenceParallelPairsGatherAndReduceScatterRows) {
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    std::vector<at::Tensor> rows;
    for (int q = 0; q < T; ++q) rows.push_back(rank_valued({3, 4}, q));
    const at::Tensor gathered = at::cat(rows, 0);  // [3T, 4]
    // Each rank's partial [3T, 4]; the reduce-scatter keeps the own 3 rows of their sum.
    at::Tensor sum = at::zeros({3 * T, 4}, f64);
    for (int q = 0; q < T; ++q) sum += rank_valued({3 * T, 4}, q);
    const at::Tensor own_rows = sum.narrow(0, 3 * r, 3);
    const at::Tensor partial = rank_valued({3 * T, 4}, r);

    EXPECT_TRUE(at::equal(gather_from_sp_forward(rows[r], tp), gathered));
    EXPECT_TRUE(at::equal(gather_from_sp_backward(partial, tp), own_rows));
    EXPECT_TRUE(at::equal(reduce_scatter_to_sp_forward(partial, tp), own_rows));
    EXPECT_TRUE(at::equal(reduce_scatter_to_sp_backward(rows[r], tp), gathered));
  }
}

TEST(TpMappings, AllReduceSumAllSumsEveryTensorInPlace) {
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    // Two dtypes (one collective each); a non-contiguous view is summed into the caller's storage.
    at::Tensor a = rank_valued({2, 3}, r), b = rank_valued({5}, r).to(at::kFloat), m = rank_valued({3, 4}, r);
    all_reduce_sum_all({a, b, m.t()}, tp);
    at::Tensor ea = at::zeros({2, 3}, f64), eb = at::zeros({5}, f64), em = at::zeros({3, 4}, f64);
    for (int q = 0; q < T; ++q) {
      ea += rank_valued({2, 3}, q);
      eb += rank_valued({5}, q);
      em += rank_valued({3, 4}, q);
    }
    EXPECT_TRUE(at::equal(a, ea));
    EXPECT_TRUE(at::equal(b, eb.to(at::kFloat)));
    EXPECT_TRUE(at::equal(m, em));
  }
}

// ---- sharding ------------------------------------------------------------------------------------

TEST(TpSharding, TensorParallelSizeMustDivideTheSplitDimensions) {
  const Qwen3Config c = tiny_config();
  for (int64_t T : {1, 2, 4}) EXPECT_NO_THROW(check_tensor_parallel_size(c, T));
  std::string e = error_of([&] { check_tensor_parallel_size(c, 8); });
  EXPECT_NE(e.find("tensor_parallel_size 8 must divide the model's num_key_value_heads (4)"), std::string::npos) << e;
  e = error_of([&] { check_tensor_parallel_size(c, 3); });
  EXPECT_NE(e.find("tensor_parallel_size 3"), std::string::npos) << e;
  e = error_of([&] { check_tensor_parallel_size(c, 0); });
  EXPECT_NE(e.find("tensor_parallel_size must be at least 1"), std::string::npos) << e;
  const Qwen3Config local = local_config(c, 4);
  EXPECT_EQ(local.num_attention_heads, 2);
  EXPECT_EQ(local.num_key_value_heads, 1);
  EXPECT_EQ(local.intermediate_size, 12);
  EXPECT_EQ(local.hidden_size, 32);
  EXPECT_EQ(local.vocab_size, 96);
}

TEST(TpSharding, ShardsAreSlicesByStyleAndTheGatheredAdapterIsTheWholeOne) {
  const Qwen3Config c = tiny_config();
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 10 + s->data);
    const LoraWeights lora = tiny_lora(c, 20 + s->data);
    const Qwen3Weights ws = shard_weights(w, r, T);
    const LoraWeights ls = shard_lora(lora, r, T);
    for (const ProjectionInfo& info : projection_table()) {
      const int p = static_cast<int>(info.projection);
      const Linear& lin = ws.layers[0].projections[p];
      const int dim = info.style == ParallelStyle::column ? 0 : 1;
      EXPECT_EQ(lin.weight->shard().dim, dim) << info.name;
      EXPECT_EQ(lin.weight->shard().index, r);
      EXPECT_EQ(lin.weight->shard().count, T);
      const at::Tensor full = w.layers[0].projections[p].weight->dense();
      const int64_t n = full.size(dim) / T;
      EXPECT_TRUE(at::equal(lin.weight->dense(), full.narrow(dim, r * n, n))) << info.name;
      const LoraPair& pair = ls.layers[0][p];
      const LoraPair& whole = lora.layers[0][p];
      if (dim == 0) {
        EXPECT_TRUE(at::equal(pair.A, whole.A)) << info.name;
        EXPECT_TRUE(at::equal(pair.B, whole.B.narrow(0, r * n, n))) << info.name;
      } else {
        EXPECT_TRUE(at::equal(pair.A, whole.A.narrow(1, r * n, n))) << info.name;
        EXPECT_TRUE(at::equal(pair.B, whole.B)) << info.name;
      }
    }
    // Converting or zeroing sharded weights keeps every projection's shard.
    EXPECT_EQ(ws.to(at::kFloat, at::kCPU).layers[0][Projection::o].weight->shard().count, T);
    EXPECT_EQ(ws.zeros_like().layers[0][Projection::q].weight->shard().index, r);
    const int64_t v = c.vocab_size / T;
    EXPECT_TRUE(at::equal(ws.embed_tokens, w.embed_tokens.narrow(0, r * v, v)));
    EXPECT_TRUE(at::equal(ws.lm_head, w.lm_head.narrow(0, r * v, v)));

    const LoraWeights gathered = gather_lora(ls, tp);
    const auto expected = lora.named_tensors();
    const auto got = gathered.named_tensors();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].first, expected[i].first);
      EXPECT_TRUE(at::equal(got[i].second, expected[i].second)) << got[i].first;
      EXPECT_TRUE(got[i].second.is_contiguous()) << got[i].first;
    }
  }
}

TEST(TpSharding, LoadingOnlyTheRanksSlicesEqualsShardingTheWholeModel) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("qft-tp-load-" + std::to_string(::getpid()) + "-" +
                                                    std::to_string(qft::test::world().rank()));
  fs::create_directories(dir);
  for (bool tied : {false, true}) {
    const Qwen3Config c = tiny_config(2, tied);
    const Qwen3Weights w = tiny_weights(c, 41);
    qft::io::save_safetensors((dir / "model.safetensors").string(), w.named_tensors(c));
    const Qwen3Weights whole = Qwen3Weights::load(dir.string(), c, at::kFloat, at::kCPU);
    for (int64_t T : {1, 2, 4}) {
      for (int64_t r = 0; r < T; ++r) {
        SCOPED_TRACE("tied " + std::to_string(tied) + " T " + std::to_string(T) + " rank " + std::to_string(r));
        const Qwen3Weights expected = shard_weights(whole, r, T);
        const Qwen3Weights got = load_weight_shard(dir.string(), c, at::kFloat, at::kCPU, r, T);
        EXPECT_EQ(got.tied(), tied);
        const auto e = expected.named_tensors(c), g = got.named_tensors(c);
        ASSERT_EQ(e.size(), g.size());
        for (size_t i = 0; i < e.size(); ++i) {
          EXPECT_EQ(e[i].first, g[i].first);
          EXPECT_TRUE(at::equal(e[i].second, g[i].second)) << e[i].first;
        }
        for (size_t l = 0; l < got.layers.size(); ++l)
          for (int p = 0; p < kNumProjections; ++p) {
            const WeightShard& a = got.layers[l].projections[p].weight->shard();
            const WeightShard& b = expected.layers[l].projections[p].weight->shard();
            EXPECT_TRUE(a.dim == b.dim && a.index == b.index && a.count == b.count) << l << " " << p;
          }
      }
    }
  }
  qft::remove_tree(dir.string());  // not fs::remove_all: core/remove_tree.h says why
}

// ---- column and row linear with LoRA -------------------------------------------------------------

TEST(TensorParallelLinear, ColumnParallelWithLoraMatchesTheWholeProjection) {
  const Qwen3Config c = tiny_config();
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 30 + s->data);
    const LoraWeights lora = tiny_lora(c, 40 + s->data);
    // The input is replicated, so LoRA dropout draws the single-GPU mask on every rank.
    const Linear full = with_lora(w.layers[0][Projection::gate], lora.layers[0][4], 0.25, 7);
    const Linear local = shard_linear(full, r, T);
    const at::Tensor x = randn({6, 32}, 50 + s->data), dy = randn({6, 48}, 60 + s->data);

    at::Tensor xa, xa_l;
    const at::Tensor y = ops::linear_forward(full, x, &xa);
    const at::Tensor y_l = ops::linear_forward(local, copy_to_tp_forward(x), &xa_l);
    EXPECT_CLOSE(gather_from_tp_forward(y_l, tp), y, "y");

    at::Tensor dA = at::zeros_like(full.lora->A), dB = at::zeros_like(full.lora->B);
    at::Tensor dW = at::zeros({48, 32}, f64);
    const at::Tensor dx = ops::linear_backward(full, dy, x, xa, {&dW, &dA, &dB, true});
    at::Tensor dA_l = at::zeros_like(local.lora->A), dB_l = at::zeros_like(local.lora->B);
    at::Tensor dW_l = at::zeros({48 / T, 32}, f64);
    const at::Tensor dy_l = gather_from_tp_backward(dy, tp);
    const at::Tensor dx_l = ops::linear_backward(local, dy_l, x, xa_l, {&dW_l, &dA_l, &dB_l, true});
    EXPECT_CLOSE(copy_to_tp_backward(dx_l, tp), dx, "dx");
    EXPECT_CLOSE(dW_l, dW.narrow(0, r * 48 / T, 48 / T), "dW");
    EXPECT_CLOSE(dB_l, dB.narrow(0, r * 48 / T, 48 / T), "dB");
    sum_partial_gradients({dA_l}, tp);  // A is replicated: each rank holds a partial sum
    EXPECT_CLOSE(dA_l, dA, "dA");
  }
}

TEST(TensorParallelLinear, RowParallelWithLoraMatchesTheWholeProjection) {
  const Qwen3Config c = tiny_config();
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 70 + s->data);
    const LoraWeights lora = tiny_lora(c, 80 + s->data);
    const Linear full = with_lora(w.layers[0][Projection::down], lora.layers[0][6], 0.0, 0);
    const Linear local = shard_linear(full, r, T);
    const int64_t I = 48, n = I / T;
    const at::Tensor x = randn({6, I}, 90 + s->data), dy = randn({6, 32}, 100 + s->data);

    at::Tensor xa, xa_l;
    const at::Tensor y = ops::linear_forward(full, x, &xa);
    const at::Tensor x_l = scatter_to_tp_forward(x, tp);
    const at::Tensor y_l = reduce_from_tp_forward(ops::linear_forward(local, x_l, &xa_l), tp);
    EXPECT_CLOSE(y_l, y, "y");

    at::Tensor dA = at::zeros_like(full.lora->A), dB = at::zeros_like(full.lora->B);
    at::Tensor dW = at::zeros({32, I}, f64);
    const at::Tensor dx = ops::linear_backward(full, dy, x, xa, {&dW, &dA, &dB, true});
    at::Tensor dA_l = at::zeros_like(local.lora->A), dB_l = at::zeros_like(local.lora->B);
    at::Tensor dW_l = at::zeros({32, n}, f64);
    const at::Tensor dx_l =
        ops::linear_backward(local, reduce_from_tp_backward(dy), x_l, xa_l, {&dW_l, &dA_l, &dB_l, true});
    EXPECT_CLOSE(scatter_to_tp_backward(dx_l, tp), dx, "dx");
    EXPECT_CLOSE(dW_l, dW.narrow(1, r * n, n), "dW");
    EXPECT_CLOSE(dA_l, dA.narrow(1, r * n, n), "dA");
    sum_partial_gradients({dB_l}, tp);  // B is replicated: each rank's x_i A_i^T is a partial sum
    EXPECT_CLOSE(dB_l, dB, "dB");
  }
}

// ---- a whole decoder layer -----------------------------------------------------------------------

namespace {

// Zero gradient buffers shaped as `w` (norms and projections).
LayerWeights zero_grads(const LayerWeights& w) {
  LayerWeights g;
  g.input_layernorm = at::zeros_like(w.input_layernorm);
  g.q_norm = at::zeros_like(w.q_norm);
  g.k_norm = at::zeros_like(w.k_norm);
  g.post_attention_layernorm = at::zeros_like(w.post_attention_layernorm);
  for (const ProjectionInfo& info : projection_table()) {
    const int p = static_cast<int>(info.projection);
    g.projections[p] = Linear::dense(info.projection, at::zeros_like(w.projections[p].weight->dense()));
  }
  return g;
}

// Two rows of 6 tokens: one causal sequence; two packed samples. Layer 0 of `lora` attached as a step
// attaches it: cast for compute, q/k/v and gate/up with their A stacked (replicated A, sharded B).
LayerContext layer_context(const Qwen3Config& c, const LayerWeights& w, const LoraWeights& lora) {
  const LoraCompute compute = LoraCompute::make(lora, at::kDouble);
  LayerContext ctx;
  ctx.config = &c;
  ctx.weights = &w;
  ctx.projections = layer_projections(w, &compute.layers[0], 2.0, 0.0, 0, 0);
  ctx.lora_stacked_A = compute.stacked_A[0];
  ctx.B = 2;
  ctx.T = 6;
  const at::Tensor positions = at::tensor({0, 1, 2, 3, 4, 5, 0, 1, 2, 0, 1, 2}, i64);
  const at::Tensor segments = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, i64).view({2, 6});
  std::tie(ctx.cos, ctx.sin) = ops::rope_tables(positions, c.head_dim, c.rope_theta, at::kDouble);
  ctx.attention = ops::attention_layout(segments, 2, 6, c.head_dim, at::kCPU, at::kDouble, /*allow_flash=*/false);
  return ctx;
}

}  // namespace

// With sequence parallelism the layer's input and output are the rank's rows of the whole layer's.
TEST(TensorParallelLayer, DecoderLayerWithLoraOnAllProjectionsMatchesTheWholeLayer) {
  const Qwen3Config c = tiny_config();
  for (bool sp : {false, true})
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name + (sp ? ", sequence parallel" : ""));
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 110 + s->data);
    const LoraWeights lora = tiny_lora(c, 120 + s->data);
    const at::Tensor x = randn({12, 32}, 130 + s->data), dy = randn({12, 32}, 140 + s->data);
    auto rows = [&](const at::Tensor& t) { return sp ? t.narrow(0, r * 12 / T, 12 / T).contiguous() : t; };

    // The whole layer, LoRA adapters and the base weights (full fine-tuning) both trained.
    const LayerContext ctx = layer_context(c, w.layers[0], lora);
    LayerActivations acts;
    const at::Tensor y = decoder_layer_forward(ctx, x, &acts);
    LayerWeights gw = zero_grads(w.layers[0]);
    auto gl = lora.zeros_like();
    const at::Tensor dx = decoder_layer_backward(ctx, dy, acts, {&gw, &gl.layers[0]});

    // This rank's part of it.
    const Qwen3Config lc = local_config(c, T);
    const LayerWeights ws = shard_layer_weights(w.layers[0], r, T);
    const LoraWeights ls = shard_lora(lora, r, T);
    const LayerContext ctx_l = tensor_parallel_context(layer_context(lc, ws, ls), tp, sp);
    LayerActivations acts_l;
    const at::Tensor y_l = decoder_layer_forward(ctx_l, rows(x), &acts_l);
    EXPECT_CLOSE(y_l, rows(y), "y");
    EXPECT_EQ(acts_l.q.size(1), 8 / T);  // the rank's own query heads
    EXPECT_EQ(acts_l.v.size(1), 4 / T);  // and KV heads
    LayerWeights gw_l = zero_grads(ws);
    auto gl_l = ls.zeros_like();
    const at::Tensor dx_l = decoder_layer_backward(ctx_l, rows(dy), acts_l, {&gw_l, &gl_l.layers[0]});
    EXPECT_CLOSE(dx_l, rows(dx), "dx");

    sum_partial_gradients(partial_lora_gradients(gl_l), tp);
    sum_partial_gradients(partial_layer_gradients(gw_l, sp), tp);
    EXPECT_CLOSE(gw_l.input_layernorm, gw.input_layernorm, "input_layernorm");
    EXPECT_CLOSE(gw_l.post_attention_layernorm, gw.post_attention_layernorm, "post_attention_layernorm");
    EXPECT_CLOSE(gw_l.q_norm, gw.q_norm, "q_norm");
    EXPECT_CLOSE(gw_l.k_norm, gw.k_norm, "k_norm");
    for (const ProjectionInfo& info : projection_table()) {
      const int p = static_cast<int>(info.projection);
      const int dim = info.style == ParallelStyle::column ? 0 : 1;
      const at::Tensor dW = gw.projections[p].weight->dense();
      const int64_t n = dW.size(dim) / T;
      EXPECT_CLOSE(gw_l.projections[p].weight->dense(), dW.narrow(dim, r * n, n), std::string("dW ") + info.name);
    }
    // The gathered LoRA gradients are the whole layer's (gather_lora works on any adapter-shaped value).
    const auto expected = gl.named_tensors();
    const auto got = gather_lora(gl_l, tp).named_tensors();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_CLOSE(got[i].second, expected[i].second, got[i].first);
  }
}

TEST(TensorParallelLayer, ContextRejectsShardsOfAnotherGroupSize) {
  const Qwen3Config c = tiny_config();
  const Qwen3Weights w = tiny_weights(c, 150);
  const LoraWeights lora = tiny_lora(c, 151);
  const int T = world().size() == 2 ? 4 : 2;  // never the group size, always a divisor of the KV heads
  const Qwen3Config lc = local_config(c, T);
  const LayerWeights ws = shard_layer_weights(w.layers[0], 0, T);
  const LoraWeights ls = shard_lora(lora, 0, T);
  const std::string e = error_of([&] { tensor_parallel_context(layer_context(lc, ws, ls), world()); });
  EXPECT_NE(e.find("q_proj holds shard 0 of " + std::to_string(T)), std::string::npos) << e;
}

// ---- the vocabulary dimension --------------------------------------------------------------------

TEST(VocabParallel, EmbeddingMatchesTheWholeTable) {
  const Qwen3Config c = tiny_config();
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const at::Tensor W = randn({96, 32}, 160 + s->data);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(170 + s->data);
    at::Tensor ids = at::randint(0, 96, {2, 9}, gen, i64);
    ids.index_put_({0, 0}, 0);
    ids.index_put_({0, 1}, 95);
    ids.index_put_({1, 0}, ids[1][1].item<int64_t>());  // a repeated id accumulates twice
    const at::Tensor dy = randn({18, 32}, 180 + s->data);

    const VocabShard shard = vocab_shard(c.vocab_size, r, T);
    const at::Tensor W_l = shard_vocab_rows(W, r, T);
    EXPECT_CLOSE(vocab_parallel_embedding_forward(W_l, shard, ids, tp), ops::embedding_forward(W, ids), "y");
    at::Tensor dW = at::zeros_like(W), dW_l = at::zeros_like(W_l);
    ops::embedding_backward(dy, ids, dW);
    vocab_parallel_embedding_backward(dy, shard, ids, dW_l, tp);
    EXPECT_CLOSE(dW_l, dW.narrow(0, shard.begin, shard.size()), "dW");
    // Sequence parallel: the output and the incoming gradient are the rank's rows (the first 16 ids,
    // which split evenly for T = 1, 2, 4).
    const at::Tensor ids16 = ids.reshape(-1).narrow(0, 0, 16), dy16 = dy.narrow(0, 0, 16);
    const int64_t n = 16 / T;
    EXPECT_CLOSE(vocab_parallel_embedding_forward(W_l, shard, ids16, tp, true),
                 ops::embedding_forward(W, ids16).narrow(0, r * n, n), "y rows");
    at::Tensor dW16 = at::zeros_like(W), dW16_l = at::zeros_like(W_l);
    ops::embedding_backward(dy16, ids16, dW16);
    vocab_parallel_embedding_backward(dy16.narrow(0, r * n, n).contiguous(), shard, ids16, dW16_l, tp, true);
    EXPECT_CLOSE(dW16_l, dW16.narrow(0, shard.begin, shard.size()), "dW from rows");
  }
}

TEST(VocabParallel, CrossEntropyMatchesTheWholeLmHeadWithoutGatheringLogits) {
  const Qwen3Config c = tiny_config();
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const at::Tensor h = randn({12, 32}, 190 + s->data), W = randn({96, 32}, 200 + s->data, 0.5);
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(210 + s->data);
    at::Tensor targets = at::randint(0, 96, {12}, gen, i64);
    targets.index_put_({2}, -100);
    targets.index_put_({7}, -100);
    targets.index_put_({0}, 0);
    targets.index_put_({1}, 95);  // the first and the last vocabulary row: owned by the first and last rank

    const VocabShard shard = vocab_shard(c.vocab_size, r, T);
    const at::Tensor W_l = shard_vocab_rows(W, r, T);
    for (int64_t chunk : {int64_t{4}, int64_t{1024}}) {
      SCOPED_TRACE(chunk);
      at::Tensor dh, dW = at::zeros_like(W), dh_l, dW_l = at::zeros_like(W_l);
      const ops::LossTargets selected = ops::loss_targets_of_shifted(targets, c.vocab_size, at::kCPU);
      const auto ce = ops::lm_head_cross_entropy(h, W, selected, chunk, 7.0, &dh, &dW);
      const auto ce_l = vocab_parallel_cross_entropy(h, W_l, shard, selected, chunk, 7.0, &dh_l, &dW_l, tp);
      EXPECT_EQ(ce_l.target_tokens, 10);
      EXPECT_EQ(ce_l.target_tokens, ce.target_tokens);
      const double loss = ce.loss_sum.item<double>();
      EXPECT_NEAR(ce_l.loss_sum.item<double>(), loss, kTol * std::abs(loss));
      EXPECT_CLOSE(dh_l, dh, "dh");
      EXPECT_CLOSE(dW_l, dW.narrow(0, shard.begin, shard.size()), "dW");
      const auto loss_only = vocab_parallel_cross_entropy(h, W_l, shard, selected, chunk, 7.0, nullptr, nullptr, tp);
      EXPECT_EQ(loss_only.loss_sum.item<double>(), ce_l.loss_sum.item<double>());
    }
  }
}

// ---- the whole step ------------------------------------------------------------------------------

namespace {

// Two rows of 8: one causal sequence with a masked prompt; two packed samples and padding.
Batch tiny_batch(uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  Batch b;
  b.input_ids = at::randint(0, 96, {2, 8}, gen, i64);
  b.labels = b.input_ids.clone();
  b.labels.index_put_({0, at::indexing::Slice(0, 3)}, -100);
  b.position_ids = at::tensor({0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 0, 1, 2, 0, 0}, i64).view({2, 8});
  b.segment_ids = at::tensor({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1}, i64).view({2, 8});
  return b;
}

}  // namespace

TEST(TensorParallelModel, StepMatchesQwen3ModelForLoraAndFullFineTuning) {
  for (bool tied : {false, true})
    for (const char* recompute : {"none", "full", "selective", "first layer", "residuals"})
      for (bool sp : {false, true})
      for (auto& s : tp_setups()) {
        SCOPED_TRACE(fmt::format("{}, tied {}, recompute {}, sequence parallel {}", s->name, tied, recompute, sp));
        Communicator& tp = *s->tp;
        const int T = tp.size(), r = tp.rank();
        const Qwen3Config c = tiny_config(2, tied);
        const Qwen3Weights w = tiny_weights(c, 220 + s->data);
        const LoraWeights lora = tiny_lora(c, 230 + s->data);
        const Batch batch = tiny_batch(240 + s->data);
        StepOptions options;
        const std::string mode = recompute;
        options.gradient_checkpointing = mode == "full" || mode == "first layer" || mode == "residuals";
        options.checkpoint_residuals = mode == "residuals";  // o's GEMM and all-reduce are not recomputed
        if (mode == "first layer") options.recompute_num_layers = 1;  // the other: selective
        options.selective_recompute = std::string(recompute) == "selective";
        options.loss_denominator = 9.0;
        options.loss_chunk_tokens = 4;

        Qwen3Model model(c, w);
        Gradients g;
        g.lora = lora.zeros_like();
        g.weights = w.zeros_like();
        const LossSum loss = model.forward_backward(batch, &lora, g, options);

        const Qwen3Weights ws = shard_weights(w, r, T);
        const LoraWeights ls = shard_lora(lora, r, T);
        Gradients gs;
        gs.lora = ls.zeros_like();
        gs.weights = ws.zeros_like();
        const LossSum loss_s = tensor_parallel_forward_backward(c, ws, batch, &ls, gs, options, tp, sp);
        EXPECT_EQ(loss_s.target_tokens, loss.target_tokens);
        EXPECT_NEAR(loss_s.loss_sum, loss.loss_sum, kTol * std::abs(loss.loss_sum));
        const LossSum eval = tensor_parallel_forward_loss(c, ws, batch, &ls, 4, tp);
        EXPECT_NEAR(eval.loss_sum, model.forward_loss(batch, &lora, 4).loss_sum, kTol * std::abs(loss.loss_sum));

        sum_partial_gradients(partial_gradients(gs, sp), tp);
        double whole_norm2 = 0.0;
        for (const auto& [name, t] : g.lora->named_tensors()) whole_norm2 += t.square().sum().item<double>();
        for (const auto& [name, t] : g.weights->named_tensors(c)) whole_norm2 += t.square().sum().item<double>();
        EXPECT_NEAR(tensor_parallel_grad_norm_squared(gs, tp), whole_norm2, kTol * whole_norm2);
        const auto expected = g.lora->named_tensors();
        const auto got = gather_lora(*gs.lora, tp).named_tensors();
        ASSERT_EQ(got.size(), expected.size());
        for (size_t i = 0; i < got.size(); ++i) EXPECT_CLOSE(got[i].second, expected[i].second, got[i].first);
        // Full fine-tuning: every rank's gradient is its slice of the whole model's.
        const Qwen3Weights slices = shard_weights(*g.weights, r, T);
        const auto want = slices.named_tensors(c);
        const auto have = gs.weights->named_tensors(c);
        ASSERT_EQ(have.size(), want.size());
        for (size_t i = 0; i < have.size(); ++i) EXPECT_CLOSE(have[i].second, want[i].second, have[i].first);
      }
}

// Column projections see the whole input, so their LoRA dropout masks are the single-GPU ones bit for
// bit: with adapters on q/k/v/gate/up only, a dropout step equals Qwen3Model's.
TEST(TensorParallelModel, ColumnLoraDropoutMatchesOneGpu) {
  const Qwen3Config c = tiny_config(2, false);
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 250 + s->data);
    const LoraWeights lora = tiny_lora(c, 260 + s->data, 0.3,
                                       {Projection::q, Projection::k, Projection::v, Projection::gate, Projection::up});
    const Batch batch = tiny_batch(270 + s->data);
    StepOptions options;
    options.dropout_seed = 99;
    Qwen3Model model(c, w);
    Gradients g;
    g.lora = lora.zeros_like();
    const LossSum loss = model.forward_backward(batch, &lora, g, options);
    const LoraWeights ls = shard_lora(lora, r, T);
    Gradients gs;
    gs.lora = ls.zeros_like();
    const LossSum loss_s = tensor_parallel_forward_backward(c, shard_weights(w, r, T), batch, &ls, gs, options, tp);
    EXPECT_NEAR(loss_s.loss_sum, loss.loss_sum, kTol * std::abs(loss.loss_sum));
    sum_partial_gradients(partial_gradients(gs), tp);
    const auto expected = g.lora->named_tensors();
    const auto got = gather_lora(*gs.lora, tp).named_tensors();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_CLOSE(got[i].second, expected[i].second, got[i].first);
  }
}

// QLoRA under tensor parallelism, as the trainer runs it with model.load_in_4bit: each rank quantizes its
// own shard to NF4 (a row-parallel cut of 8 or 16 columns does not fall on the 64-element blocks, so this
// is not the whole weight's quantization). The step equals one GPU's on the dequantized shards put together.
TEST(TensorParallelModel, QloraStepOnIndependentlyQuantizedShardsMatchesTheDequantizedModel) {
  const Qwen3Config c = tiny_config(2, false);
  for (auto& s : tp_setups()) {
    SCOPED_TRACE(s->name);
    Communicator& tp = *s->tp;
    const int T = tp.size(), r = tp.rank();
    const Qwen3Weights w = tiny_weights(c, 290 + s->data);
    const LoraWeights lora = tiny_lora(c, 300 + s->data);
    const Batch batch = tiny_batch(310 + s->data);
    Qwen3Weights ws = shard_weights(w, r, T);
    quantize_projections(ws, {}, at::kDouble);
    Qwen3Weights whole = w;  // copies share storages; each projection's storage is replaced below
    auto scratch = std::make_shared<Nf4Scratch>();
    for (LayerWeights& layer : whole.layers)
      for (Linear& linear : layer.projections) {
        std::vector<at::Tensor> parts;
        for (int index = 0; index < T; ++index) {
          const Linear shard = shard_linear(linear, index, T);
          parts.push_back(Nf4Weight::quantize(shard.weight->dense(), {}, at::kDouble, scratch)->dequantize(at::kDouble));
        }
        linear.weight = std::make_shared<DenseWeight>(at::cat(parts, shard_dim(linear.projection)));
      }
    ASSERT_STREQ(ws.layers[1][Projection::down].weight->kind(), "nf4");
    Qwen3Model model(c, whole);
    Gradients g;
    g.lora = lora.zeros_like();
    StepOptions options;
    options.gradient_checkpointing = true;
    const LossSum loss = model.forward_backward(batch, &lora, g, options);
    const LoraWeights ls = shard_lora(lora, r, T);
    Gradients gs;
    gs.lora = ls.zeros_like();
    const LossSum loss_s = tensor_parallel_forward_backward(c, ws, batch, &ls, gs, options, tp);
    EXPECT_NEAR(loss_s.loss_sum, loss.loss_sum, kTol * std::abs(loss.loss_sum));
    sum_partial_gradients(partial_gradients(gs), tp);
    const auto expected = g.lora->named_tensors();
    const auto got = gather_lora(*gs.lora, tp).named_tensors();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_CLOSE(got[i].second, expected[i].second, got[i].first);
  }
}

TEST(TensorParallelModel, SequenceParallelNeedsTokensDivisibleByTheGroup) {
  const Qwen3Config c = tiny_config(1, false);
  const int T = world().size(), r = world().rank();
  const Qwen3Weights ws = shard_weights(tiny_weights(c, 280), r, T);
  const at::Tensor ids = at::arange(9, i64).view({1, 9});  // 9 tokens: a multiple of 1 only
  const Batch batch = Batch::causal(ids, ids.clone());
  Gradients g;
  g.weights = ws.zeros_like();
  const std::string e =
      error_of([&] { tensor_parallel_forward_backward(c, ws, batch, nullptr, g, StepOptions(), world(), true); });
  if (T == 1) {
    EXPECT_EQ(e, "");
  } else {
    EXPECT_NE(e.find("9 tokens (1 x 9) do not split evenly over tensor_parallel_size " + std::to_string(T)),
              std::string::npos)
        << e;
  }
}
