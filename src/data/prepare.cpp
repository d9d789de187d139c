#include "data/prepare.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/fnv1a.h"
#include "core/files.h"
#include "data/dataset_reader.h"
#include "data/input_problems.h"
#include "data/mixing.h"
#include "data/token_cache.h"
#include "data/tokenize_sample.h"
#include "text/tokenizer.h"

namespace qft::data {

using Json = nlohmann::ordered_json;

namespace {

// Changes whenever the rendering, masking or truncation code changes what a cache holds.
constexpr const char* kPipelineVersion = "qwen3-template-2/mask-1/truncate-1/mix-1";

std::string effective_tokenizer(const DataConfig& config, const std::string& tokenizer_path) {
  return resolve_tokenizer_path(tokenizer_path.empty() ? config.tokenizer : tokenizer_path);
}

Json columns_json(const ColumnMap& columns) {
  Json out = Json::object();
  for (const auto& [logical, key] : columns.entries()) out[logical] = key;
  return out;
}

// Everything that decides the cache's content, as canonical JSON.
Json key_material(const DataConfig& config, const std::string& tokenizer_json) {
  Json material;
  material["pipeline"] = kPipelineVersion;
  material["cache_format"] = kTokenCacheFormatVersion;
  material["tokenizer"] = fnv1a_hex(read_file(tokenizer_json));
  Json datasets = Json::array();
  for (const DatasetSpec& spec : config.datasets) {
    Json d;
    d["content"] = fnv1a_hex(read_file(spec.path));
    d["json_list"] = spec.path.size() >= 5 && spec.path.compare(spec.path.size() - 5, 5, ".json") == 0;
    d["format"] = format_name(spec.format);
    d["columns"] = columns_json(spec.columns);
    d["ratio"] = spec.ratio ? Json(*spec.ratio) : Json();
    d["count"] = spec.count ? Json(*spec.count) : Json();
    datasets.push_back(d);
  }
  material["datasets"] = datasets;
  material["num_samples"] = config.num_samples ? Json(*config.num_samples) : Json();
  material["max_seq_length"] = config.max_seq_length;
  material["truncation"] = truncation_name(config.truncation);
  material["train_on_prompt"] = config.train_on_prompt;
  material["mask_history"] = config.mask_history;
  material["enable_thinking"] = config.enable_thinking;
  material["strict"] = config.strict;
  material["seed"] = config.seed;
  return material;
}

struct TokenizedRecord {
  std::vector<TokenizedSample> pieces;  // one, or several chunks of a long pre-training text
  FitResult fit = FitResult::fits;
};

// Tokenizes every sample of one data set on `threads` threads; results keep the input order. An error
// names the record it came from.
std::vector<TokenizedRecord> tokenize_all(const DatasetContents& contents, const text::Tokenizer& tokenizer,
                                          const DataConfig& config, int threads) {
  const std::vector<SourcedSample>& samples = contents.samples;
  std::vector<TokenizedRecord> results(samples.size());
  MaskOptions mask;
  mask.train_on_prompt = config.train_on_prompt;
  mask.mask_history = config.mask_history;
  mask.enable_thinking = config.enable_thinking;
  std::atomic<size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  const auto keep_first_error = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(error_mutex);
    if (!error) error = std::move(e);
    next = samples.size();
  };
  const auto work = [&] {
    for (size_t i = next++; i < samples.size(); i = next++) {
      try {
        const Sample& sample = samples[i].sample;
        TokenizedRecord& record = results[i];
        if (sample.kind == Sample::Kind::text) {
          TokenizedSample whole = tokenize_text(sample.text, tokenizer);
          if (static_cast<int64_t>(whole.ids.size()) > config.max_seq_length && config.truncation == Truncation::drop) {
            record.fit = FitResult::too_long;
          } else {
            record.fit = static_cast<int64_t>(whole.ids.size()) > config.max_seq_length ? FitResult::truncated : FitResult::fits;
            record.pieces = split_into_chunks(whole, config.max_seq_length);
          }
        } else {
          TokenizedSample tokens = tokenize_chat(sample.conversation, tokenizer, mask);
          record.fit = fit_to_length(tokens, config.max_seq_length, config.truncation);
          if (record.fit == FitResult::fits || record.fit == FitResult::truncated) record.pieces.push_back(std::move(tokens));
        }
      } catch (const Error& e) {
        keep_first_error(std::make_exception_ptr(Error(fmt::format("{}: {}", contents.location(samples[i].line), e.what()))));
      } catch (...) {
        keep_first_error(std::current_exception());
      }
    }
  };
  const int count = std::max(1, std::min<int>(threads, static_cast<int>(samples.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < count; ++t) pool.emplace_back(work);
  work();
  for (auto& thread : pool) thread.join();
  if (error) std::rethrow_exception(error);
  return results;
}

int64_t count_targets(const TokenizedSample& sample) {
  return static_cast<int64_t>(std::count(sample.targets.begin(), sample.targets.end(), 1));
}

}  // namespace

std::string fnv1a_hex(const std::string& bytes) { return fmt::format("{:016x}", fnv1a64(bytes)); }

std::string token_cache_path(const DataConfig& config, const std::string& tokenizer_path) {
  const std::string tokenizer_json = effective_tokenizer(config, tokenizer_path);
  const std::string key = fnv1a_hex(key_material(config, tokenizer_json).dump());
  return (std::filesystem::path(config.cache_dir) / ("tokens-" + key + ".h5")).string();
}

PrepareReport prepare_dataset(const DataConfig& config, const std::string& tokenizer_path, bool force) {
  QFT_CHECK(!config.datasets.empty(), "data.datasets is empty");
  for (const DatasetSpec& spec : config.datasets)
    QFT_CHECK(file_exists(spec.path), "data set '{}' does not exist", spec.path);
  const std::string tokenizer_json = effective_tokenizer(config, tokenizer_path);
  const Json material = key_material(config, tokenizer_json);
  PrepareReport report;
  report.cache_key = fnv1a_hex(material.dump());
  report.cache_path = (std::filesystem::path(config.cache_dir) / ("tokens-" + report.cache_key + ".h5")).string();

  if (!force && file_exists(report.cache_path)) {
    const TokenCacheReader existing(report.cache_path);
    const Json metadata = existing.metadata();
    if (metadata.value("cache_key", "") == report.cache_key) {
      report.reused = true;
      report.samples = existing.num_samples();
      report.tokens = existing.num_tokens();
      report.target_tokens = metadata.value("target_tokens", int64_t{0});
      report.truncated = metadata.value("truncated", int64_t{0});
      report.text_chunks = metadata.value("text_chunks", int64_t{0});
      if (metadata.contains("skipped")) report.skipped = metadata["skipped"].get<std::map<std::string, int64_t>>();
      for (const auto& d : metadata.value("datasets", Json::array())) {
        report.datasets.push_back({d.value("path", ""), d.value("format", ""), d.value("records", int64_t{0}),
                                   d.value("usable", int64_t{0}), d.value("selected", int64_t{0})});
      }
      spdlog::info("token cache {} is up to date ({} samples, {} tokens)", report.cache_path, report.samples, report.tokens);
      return report;
    }
  }

  const text::Tokenizer tokenizer = text::Tokenizer::from_file(tokenizer_json);
  const int threads = config.threads > 0 ? config.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ProblemLog problems(config.strict);
  std::vector<std::vector<TokenizedSample>> usable(config.datasets.size());

  for (size_t d = 0; d < config.datasets.size(); ++d) {
    const DatasetSpec& spec = config.datasets[d];
    const DatasetContents contents = read_dataset_file(spec.path, spec.format, spec.columns, problems);
    std::vector<TokenizedRecord> tokenized = tokenize_all(contents, tokenizer, config, threads);
    for (size_t i = 0; i < tokenized.size(); ++i) {
      const std::string location = contents.location(contents.samples[i].line);
      switch (tokenized[i].fit) {
        case FitResult::too_long:
          problems.report(Problem::too_long, location,
                          fmt::format("longer than max_seq_length {} (truncation: drop)", config.max_seq_length));
          continue;
        case FitResult::no_targets:
          problems.report(Problem::no_target_tokens, location, "no target tokens left after truncation");
          continue;
        case FitResult::truncated: ++report.truncated; break;
        case FitResult::fits: break;
      }
      report.text_chunks += static_cast<int64_t>(tokenized[i].pieces.size()) - 1;
      for (auto& piece : tokenized[i].pieces) usable[d].push_back(std::move(piece));
    }
    DatasetReport dataset;
    dataset.path = spec.path;
    dataset.format = format_name(contents.format);
    dataset.records = contents.records_seen;
    dataset.usable = static_cast<int64_t>(usable[d].size());
    report.datasets.push_back(dataset);
    spdlog::info("{}: {} records, format {}, {} usable samples", spec.path, dataset.records, dataset.format, dataset.usable);
  }
  if (problems.total() > 0) spdlog::warn("skipped {} samples: {}", problems.total(), problems.summary());
  report.skipped = problems.counts_by_name();

  std::vector<MixSource> sources;
  for (size_t d = 0; d < config.datasets.size(); ++d) {
    MixSource source;
    source.available = static_cast<int64_t>(usable[d].size());
    source.ratio = config.datasets[d].ratio;
    source.count = config.datasets[d].count;
    if (source.available == 0) {
      spdlog::warn("{}: no usable samples; left out of the mixture", config.datasets[d].path);
      source.ratio.reset();
      source.count.reset();
    }
    sources.push_back(source);
  }
  const bool any_samples = std::any_of(sources.begin(), sources.end(), [](const MixSource& s) { return s.available > 0; });
  QFT_CHECK(any_samples, "no usable samples in any data set{}", problems.total() ? " (" + problems.summary() + ")" : "");
  const bool ratios_left = std::any_of(sources.begin(), sources.end(), [](const MixSource& s) { return s.ratio.has_value(); });
  const std::vector<MixEntry> mixture = plan_mixture(sources, ratios_left ? config.num_samples : std::nullopt, config.seed);
  QFT_CHECK(!mixture.empty(), "the mixture is empty (check ratio/count/num_samples)");

  TokenCacheWriter writer(report.cache_path);
  for (const MixEntry& entry : mixture) {
    const TokenizedSample& sample = usable[static_cast<size_t>(entry.source)][static_cast<size_t>(entry.index)];
    writer.append(sample);
    ++report.datasets[static_cast<size_t>(entry.source)].selected;
    report.tokens += static_cast<int64_t>(sample.ids.size());
    report.target_tokens += count_targets(sample);
  }
  report.samples = static_cast<int64_t>(mixture.size());

  Json metadata;
  metadata["format_version"] = kTokenCacheFormatVersion;
  metadata["cache_key"] = report.cache_key;
  metadata["key_material"] = material;
  metadata["tokenizer_path"] = tokenizer_json;
  const int32_t pad_id = tokenizer.token_to_id("<|endoftext|>");
  metadata["pad_token_id"] = pad_id;
  metadata["samples"] = report.samples;
  metadata["tokens"] = report.tokens;
  metadata["target_tokens"] = report.target_tokens;
  metadata["truncated"] = report.truncated;
  metadata["text_chunks"] = report.text_chunks;
  metadata["skipped"] = report.skipped;
  Json datasets = Json::array();
  for (const DatasetReport& d : report.datasets)
    datasets.push_back({{"path", d.path}, {"format", d.format}, {"records", d.records}, {"usable", d.usable}, {"selected", d.selected}});
  metadata["datasets"] = datasets;
  writer.finish(metadata.dump());
  spdlog::info("wrote {}: {} samples, {} tokens ({} targets)", report.cache_path, report.samples, report.tokens,
               report.target_tokens);
  return report;
}

}  // namespace qft::data
