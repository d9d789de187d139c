// The KV-cache decoder against the full-sequence forward (every position, rows of different lengths,
// with and without LoRA), cached attention's two paths against each other, the sampler's invariants,
// and the streaming text helpers.
#include <limits>
#include <map>

#include "generate/decode.h"
#include "generate/generator.h"
#include "generate/sampler.h"
#include "model/qwen3_model.h"
#include "model_test_util.h"

using namespace qft::model;
using namespace qft::generate;

namespace {

const auto f64 = at::TensorOptions().dtype(at::kDouble);

// The decoder and Qwen3Model::logits both return fp32 logits; computed in float64, they may differ by the
// final rounding only (a wrong mask, position or cache slot gives errors of order 1e-1).
#define EXPECT_LOGITS_CLOSE(a, b, what)                                                            \
  do {                                                                                             \
    const double e = qft::test::rel_err((a), (b));                                                 \
    ::testing::Test::RecordProperty(std::string("err_") + (what), fmt::format("{:.3e}", e));       \
    EXPECT_LE(e, 1e-6) << (what) << " relative error " << e;                                      \
  } while (0)
const auto i64 = at::TensorOptions().dtype(at::kLong);

Qwen3Config decode_config(bool tied) {
  nlohmann::json j = {{"model_type", "qwen3"},     {"vocab_size", 97},          {"hidden_size", 32},
                      {"intermediate_size", 48},   {"num_hidden_layers", 2},    {"num_attention_heads", 4},
                      {"num_key_value_heads", 2},  {"head_dim", 12},            {"rms_norm_eps", 1e-6},
                      {"rope_theta", 10000.0},     {"tie_word_embeddings", tied}};
  return Qwen3Config::from_json(j, "decode-config");
}

Qwen3Weights decode_weights(const Qwen3Config& c, uint64_t seed) {
  Qwen3Weights w = Qwen3Weights::random(c, seed, 0.1, at::kDouble);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 1000);
  for (auto& [name, t] : w.named_tensors(c))
    if (name.find("norm") != std::string::npos) t.add_(at::normal(0.0, 0.2, t.sizes(), gen, f64));
  return w;
}

LoraWeights decode_lora(const Qwen3Config& c, uint64_t seed) {
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 8;
  lc.target_modules = {Projection::q, Projection::k, Projection::v, Projection::o,
                       Projection::gate, Projection::up, Projection::down};
  LoraWeights l = LoraWeights::init(c, lc, seed);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed + 7);
  for (auto& layer : l.layers)
    for (auto& pair : layer)
      if (pair.defined()) pair.B = at::normal(0.0, 0.3, pair.B.sizes(), gen, f64).to(at::kFloat);
  return l;
}

// Logits of one row through the training path's full forward: [L, V].
at::Tensor full_logits(Qwen3Model& model, const std::vector<int64_t>& ids, const LoraWeights* lora) {
  const at::Tensor t = at::tensor(ids, i64).view({1, -1});
  return model.logits(Batch::causal(t, at::Tensor()), lora)[0];
}

class DecodeVsFull : public ::testing::TestWithParam<std::tuple<bool, bool>> {};

TEST_P(DecodeVsFull, EveryPositionMatchesTheFullForward) {
  const auto [tied, with_lora] = GetParam();
  const Qwen3Config c = decode_config(tied);
  Qwen3Model model(c, decode_weights(c, 3));
  const LoraWeights lora = decode_lora(c, 5);
  const LoraWeights* adapters = with_lora ? &lora : nullptr;
  Decoder decoder(c, model.weights(), adapters);

  // Two rows: prompts of 7 and 4 tokens (prefilled as one right-padded block), then two single-token
  // steps, then a block of 3 / 1 new tokens (uneven again), then one more step.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(11);
  const at::Tensor all = at::randint(0, c.vocab_size, {2, 16}, gen, i64);
  std::vector<std::vector<int64_t>> rows(2);
  KvCache cache = decoder.allocate_cache(2, 16);
  const std::vector<std::vector<int64_t>> blocks = {{7, 4}, {1, 1}, {1, 1}, {3, 1}, {1, 1}};
  std::vector<int64_t> used = {0, 0};
  for (const auto& lengths : blocks) {
    const int64_t T = std::max(lengths[0], lengths[1]);
    at::Tensor ids = at::zeros({2, T}, i64);
    for (int b = 0; b < 2; ++b) {
      for (int64_t t = 0; t < lengths[b]; ++t) {
        ids[b][t] = all[b][used[b] + t];
        rows[b].push_back(all[b][used[b] + t].item<int64_t>());
      }
    }
    const at::Tensor got = decoder.forward(cache, ids, lengths, /*all_positions=*/true);  // [2, T, V]
    for (int b = 0; b < 2; ++b) {
      const at::Tensor want = full_logits(model, rows[b], adapters);
      EXPECT_LOGITS_CLOSE(got[b].narrow(0, 0, lengths[b]), want.narrow(0, used[b], lengths[b]),
                       fmt::format("row{}_pos{}", b, used[b]));
      used[b] += lengths[b];
    }
    EXPECT_EQ(cache.lengths, used);
  }
  // The default (last position only) equals the last real position of all_positions.
  KvCache fresh = decoder.allocate_cache(2, 16);
  at::Tensor prompt = at::zeros({2, 7}, i64);
  prompt[0] = all[0].narrow(0, 0, 7);
  prompt[1].narrow(0, 0, 4).copy_(all[1].narrow(0, 0, 4));
  const at::Tensor last = decoder.forward(fresh, prompt, {7, 4});
  EXPECT_LOGITS_CLOSE(last[0], full_logits(model, rows[0], adapters)[6], "last_row0");
  EXPECT_LOGITS_CLOSE(last[1], full_logits(model, rows[1], adapters)[3], "last_row1");
}

INSTANTIATE_TEST_SUITE_P(TiedAndLora, DecodeVsFull,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool()));

TEST(CachedAttention, MaskedKeysDoNotLeakNaN) {
  // A short row next to a long one reads keys past its own length (weight 0): they must not be NaN.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(3);
  const Qwen3Config c = decode_config(false);
  const KvCache cache = KvCache::allocate(c, 2, 8, at::kBFloat16, at::kCPU);
  for (const at::Tensor& t : cache.k) EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0);
  at::Tensor k = cache.k[0].clone(), v = cache.v[0].clone();
  k[1].narrow(1, 0, 6).normal_(0, 1, gen);
  v[1].narrow(1, 0, 6).normal_(0, 1, gen);
  k[0].narrow(1, 0, 2).normal_(0, 1, gen);
  v[0].narrow(1, 0, 2).normal_(0, 1, gen);
  const at::Tensor q = at::randn({2, 1, 4, 12}, gen, at::TensorOptions().dtype(at::kBFloat16));
  EXPECT_TRUE(cached_attention(q, k, v, visible_keys({1, 5}, 1, at::kCPU)).isfinite().all().item<bool>());
  v[0][0][4].fill_(std::numeric_limits<float>::quiet_NaN());  // what an uninitialised cache may hold
  EXPECT_FALSE(cached_attention(q, k, v, visible_keys({1, 5}, 1, at::kCPU)).isfinite().all().item<bool>())
      << "the check above cannot fail: masked keys are not read";
}

TEST(CachedAttention, SdpaPathEqualsMathPath) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(2);
  const at::Tensor q = at::randn({3, 2, 4, 8}, gen, f64);
  const at::Tensor k = at::randn({3, 2, 11, 8}, gen, f64), v = at::randn({3, 2, 11, 8}, gen, f64);
  const at::Tensor visible = visible_keys({0, 5, 7}, 2, at::kCPU);
  ASSERT_EQ(visible.sizes(), (std::vector<int64_t>{3, 2, 9}));
  EXPECT_EQ(visible[1][1].sum().item<int64_t>(), 7);  // row 1, query 1 sits at position 6
  const at::Tensor math = cached_attention(q, k, v, visible, false);
  QFT_EXPECT_CLOSE(cached_attention(q, k, v, visible, true), math, "sdpa");
  // Row 0 query 0 sees only key 0: its output is v[0, kv head, 0] for every query head of the group.
  QFT_EXPECT_CLOSE(math[0][0][0], v[0][0][0], "first_query");
  QFT_EXPECT_CLOSE(math[0][0][3], v[0][1][0], "first_query_gqa");
  // Against a dense reference: softmax over the visible keys of each (row, query, head).
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t i = 0; i < 2; ++i)
      for (int64_t h = 0; h < 4; ++h) {
        const int64_t n = visible[b][i].sum().item<int64_t>();
        const at::Tensor keys = k[b][h / 2].narrow(0, 0, n), values = v[b][h / 2].narrow(0, 0, n);
        const at::Tensor p = at::softmax(at::mv(keys, q[b][i][h]) / std::sqrt(8.0), 0);
        QFT_EXPECT_CLOSE(math[b][i][h], at::mv(values.t(), p), fmt::format("dense_{}_{}_{}", b, i, h));
      }
}

TEST(Sampler, GreedyIsArgmaxAndFiltersNeverChooseRemovedTokens) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(4);
  const at::Tensor logits = at::randn({4, 50}, gen, at::TensorOptions().dtype(at::kFloat)) * 0.5;
  const std::vector<int64_t> greedy = choose_tokens(logits, false, {});
  for (int b = 0; b < 4; ++b) EXPECT_EQ(greedy[b], logits[b].argmax().item<int64_t>());

  SamplingOptions o;
  o.do_sample = true;
  o.top_k = 5;
  o.top_p = 0.8;
  o.temperature = 0.7;
  const at::Tensor scores = process_logits(logits, at::Tensor(), o);
  const at::Tensor kept = scores.isfinite();
  EXPECT_LE(kept.sum(-1).max().item<int64_t>(), 5);
  EXPECT_GE(kept.sum(-1).min().item<int64_t>(), 1);
  std::map<int64_t, int> counts;
  RowRandom a(9, 0), b(9, 0), other(9, 1);
  std::vector<double> first;
  for (int draw = 0; draw < 400; ++draw) {
    const double u = a.uniform();
    EXPECT_EQ(u, b.uniform());  // a stream is a pure function of (seed, row)
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    first.push_back(other.uniform());
    const std::vector<int64_t> picked = choose_tokens(scores, true, {u, u, u, u});
    for (int r = 0; r < 4; ++r) {
      ASSERT_TRUE(kept[r][picked[r]].item<bool>()) << "row " << r << " picked a filtered token";
      if (r == 0) ++counts[picked[0]];
    }
  }
  EXPECT_GE(counts.size(), 2u) << "sampling always picked one token";
  // The draws follow the filtered distribution (400 draws: a frequency's standard deviation is <= 0.025).
  const at::Tensor p0 = scores[0].softmax(-1);
  for (int64_t v = 0; v < 50; ++v)
    EXPECT_NEAR(counts[v] / 400.0, p0[v].item<double>(), 0.08) << "token " << v;
  RowRandom a2(9, 0);
  EXPECT_NE(a2.uniform(), first[0]);  // rows draw from different streams

  // u just below 1 picks the last kept token, u = 0 the first kept one.
  const at::Tensor probs = scores[0].softmax(-1);
  const at::Tensor nonzero = (probs > 0).nonzero().squeeze(1);
  EXPECT_EQ(choose_tokens(scores.narrow(0, 0, 1), true, {0.0})[0], nonzero[0].item<int64_t>());
  EXPECT_EQ(choose_tokens(scores.narrow(0, 0, 1), true, {1.0 - 1e-12})[0], nonzero[-1].item<int64_t>());
}

TEST(Sampler, RepetitionPenaltyLowersSeenTokens) {
  const at::Tensor logits = at::tensor({2.0f, -2.0f, 1.0f, 0.5f}).view({1, 4});
  const at::Tensor seen = at::tensor({1, 1, 0, 0}).to(at::kBool).view({1, 4});
  SamplingOptions o;
  o.repetition_penalty = 2.0;
  const at::Tensor s = process_logits(logits, seen, o);
  EXPECT_FLOAT_EQ(s[0][0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(s[0][1].item<float>(), -4.0f);
  EXPECT_FLOAT_EQ(s[0][2].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(s[0][3].item<float>(), 0.5f);
}

TEST(Sampler, BadOptionsAreErrorsNamingTheSetting) {
  SamplingOptions o;
  o.top_p = 1.5;
  try {
    validate(o, "--top-p");
    FAIL() << "no error";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("top_p must be in (0, 1]"), std::string::npos) << e.what();
  }
}

TEST(TextStream, StreamsWholeCharactersOnly) {
  const qft::text::Tokenizer tok = qft::text::Tokenizer::from_file(std::string(QFT_TOKENIZER_DIR) + "/tokenizer.json");
  const std::string text = "你好, world! 😀 ünïcödé 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 <think>x</think>\n\n答";
  std::vector<int32_t> ids = tok.encode(text);
  ids.insert(ids.begin() + 3, 151900);  // an embedding row without a token: left out, as HF decodes
  std::vector<bool> decodable = decodable_ids(tok);
  EXPECT_EQ(decodable.size(), 151669u);
  TextStream stream(tok, decodable);
  std::string joined;
  int held = 0;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos) << "half a character was printed";
    if (piece.empty()) ++held;
    joined += piece;
  }
  joined += stream.finish();
  EXPECT_EQ(joined, text);
  EXPECT_GT(held, 0) << "no token ended inside a character: the test does not test holding back";
}

TEST(ThinkSplitter, SplitsTagsAcrossChunkBoundaries) {
  ThinkSplitter s;
  std::vector<ThinkSplitter::Piece> all;
  for (const char* chunk : {"<th", "ink>\nlet me", " see</t", "hink>\n\nThe ans", "wer <b>"}) {
    auto p = s.push(chunk);
    all.insert(all.end(), p.begin(), p.end());
  }
  auto p = s.finish();
  all.insert(all.end(), p.begin(), p.end());
  std::string thinking, answer;
  for (const auto& piece : all) (piece.thinking ? thinking : answer) += piece.text;
  EXPECT_EQ(thinking, "<think>\nlet me see</think>");
  EXPECT_EQ(answer, "\n\nThe answer <b>");
}

}  // namespace
