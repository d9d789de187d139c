#include "cli/generate_batches.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "text/chat_template.h"

namespace qft::cli {

std::vector<int32_t> prompt_ids_from_json(const nlohmann::ordered_json& j, const std::string& where,
                                          const text::Tokenizer& tokenizer, bool enable_thinking) {
  QFT_CHECK(j.is_object(), "{}: expected a JSON object with \"messages\", \"prompt\" or \"text\"", where);
  const int kinds = static_cast<int>(j.contains("messages")) + static_cast<int>(j.contains("prompt")) +
                    static_cast<int>(j.contains("text"));
  QFT_CHECK(kinds == 1, "{}: expected exactly one of \"messages\", \"prompt\" or \"text\"", where);
  if (j.contains("enable_thinking")) {
    QFT_CHECK(j["enable_thinking"].is_boolean(), "{}: \"enable_thinking\" must be true or false", where);
    enable_thinking = j["enable_thinking"].get<bool>();
  }
  if (j.contains("text")) {
    QFT_CHECK(j["text"].is_string(), "{}: \"text\" must be a string", where);
    std::vector<int32_t> ids = tokenizer.encode(j["text"].get<std::string>());
    QFT_CHECK(!ids.empty(), "{}: \"text\" is empty", where);
    return ids;
  }
  nlohmann::ordered_json messages;
  if (j.contains("prompt")) {
    QFT_CHECK(j["prompt"].is_string(), "{}: \"prompt\" must be a string", where);
    messages = nlohmann::ordered_json::array({{{"role", "user"}, {"content", j["prompt"]}}});
  } else {
    QFT_CHECK(j["messages"].is_array() && !j["messages"].empty(), "{}: \"messages\" must be a non-empty array", where);
    messages = j["messages"];
  }
  text::Conversation conversation;
  try {
    const nlohmann::ordered_json tools = j.contains("tools") ? j["tools"] : nlohmann::ordered_json(nullptr);
    conversation = text::conversation_from_hf_json(messages, tools);
  } catch (const Error& e) {
    fail("{}: {}", where, e.what());
  }
  text::TemplateOptions options;
  options.add_generation_prompt = true;
  options.enable_thinking = enable_thinking;
  return tokenizer.encode(text::render_qwen3_chat(conversation, options).text);
}

std::vector<generate::Completion> generate_in_batches(const std::string& command, const generate::LoadedModel& model,
                                                      generate::Decoder& decoder, const generate::ModelFlags& flags,
                                                      const std::vector<std::vector<int32_t>>& requests,
                                                      int64_t batch_size, bool ignore_eos) {
  // Batches of similar lengths (less padding); answers go back in input order. Each request samples from
  // its own stream (seed, index), so answers do not depend on the batching.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return requests[a].size() < requests[b].size(); });
  std::vector<generate::Completion> completions(requests.size());
  const auto start = std::chrono::steady_clock::now();
  int64_t generated = 0;
  for (size_t first = 0; first < order.size(); first += static_cast<size_t>(batch_size)) {
    const size_t last = std::min(order.size(), first + static_cast<size_t>(batch_size));
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> streams;
    int64_t longest = 0;
    for (size_t k = first; k < last; ++k) {
      prompts.push_back(requests[order[k]]);
      streams.push_back(order[k]);
      longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts.back().size()));
    }
    generate::GenerationOptions options = model.options(flags, longest);
    if (ignore_eos) options.stop_ids.clear();
    const auto batch_start = std::chrono::steady_clock::now();
    const std::vector<generate::Completion> done = generate::generate_batch(decoder, prompts, streams, options);
    int64_t batch_tokens = 0;
    for (size_t k = first; k < last; ++k) {
      completions[order[k]] = done[k - first];
      batch_tokens += static_cast<int64_t>(done[k - first].tokens.size());
    }
    generated += batch_tokens;
    const auto now = std::chrono::steady_clock::now();
    const double batch_seconds = std::chrono::duration<double>(now - batch_start).count();
    const double seconds = std::chrono::duration<double>(now - start).count();
    // Time from the prompt's prefill to the last token (host-synchronised: tokens are read every step).
    spdlog::info("{}: batch of {} prompts: {} new tokens in {:.3f} s, {:.1f} tokens/s; {}/{} prompts done, "
                 "{:.1f} tokens/s overall",
                 command, last - first, batch_tokens, batch_seconds, batch_tokens / std::max(batch_seconds, 1e-9),
                 last, order.size(), generated / std::max(seconds, 1e-9));
  }
  return completions;
}

std::string completion_text(const generate::LoadedModel& model, const generate::Completion& completion) {
  std::vector<int32_t> answer = completion.tokens;
  if (completion.stopped) answer.pop_back();
  return generate::decode_generated(*model.tokenizer, model.decodable, answer);
}

int64_t parse_batch_size(const std::string& command, const std::string& v) {
  int64_t batch_size = 0;
  try {
    size_t used = 0;
    batch_size = std::stoll(v, &used);
    QFT_CHECK(used == v.size() && batch_size >= 1, "");
  } catch (const std::exception&) {
    fail("{}: --batch-size '{}' is not a positive integer", command, v);
  }
  return batch_size;
}

}  // namespace qft::cli
