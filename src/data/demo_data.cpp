#include "data/demo_data.h"

#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/files.h"
#include "data/mixing.h"

namespace qft::data {

using Json = nlohmann::ordered_json;

namespace {

constexpr uint64_t kDemoSeed = 20260522;
const char* const kPersonaEn = "You are Qiqi, a friendly bilingual assistant. Answer briefly and in the user's language.";
const char* const kPersonaZh = "你是琪琪，一个友好的双语助手。请用用户的语言简短回答。";

struct Bilingual {
  const char* en;
  const char* zh;
};
const Bilingual kCities[] = {{"Paris", "巴黎"}, {"Beijing", "北京"}, {"Tokyo", "东京"}, {"Berlin", "柏林"},
                        {"Shanghai", "上海"}, {"London", "伦敦"}, {"Sydney", "悉尼"}, {"Chengdu", "成都"}};
const Bilingual kConditions[] = {{"sunny", "晴"}, {"cloudy", "多云"}, {"rainy", "小雨"}, {"windy", "有风"}};
const Bilingual kPhrases[] = {{"good morning", "早上好"}, {"thank you", "谢谢"}, {"see you tomorrow", "明天见"},
                           {"I like tea", "我喜欢喝茶"}, {"where is the station?", "车站在哪里？"},
                           {"happy birthday", "生日快乐"}, {"the weather is nice today", "今天天气很好"}};

Json message(const char* role, const std::string& content) { return Json{{"role", role}, {"content", content}}; }

Json weather_tool() {
  return Json::parse(R"({"type": "function", "function": {"name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {
      "city": {"type": "string", "description": "City name"},
      "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}})");
}

class DemoWriter {
 public:
  explicit DemoWriter(uint64_t seed) : rng_(seed) {}
  int pick(int n) { return static_cast<int>(rng_.below(static_cast<uint64_t>(n))); }
  bool chance(int percent) { return pick(100) < percent; }
  template <size_t N>
  const Bilingual& pick_from(const Bilingual (&items)[N]) { return items[pick(static_cast<int>(N))]; }

  Json arithmetic(bool chinese) {
    const int a = 2 + pick(98), b = 2 + pick(98);
    const bool multiply = chance(40);
    const int result = multiply ? a * b : a + b;
    const std::string op = multiply ? "×" : "+";
    Json messages = Json::array();
    messages.push_back(message("system", chinese ? kPersonaZh : kPersonaEn));
    messages.push_back(message("user", chinese ? fmt::format("{} {} {} 等于多少？", a, op, b) : fmt::format("What is {} {} {}?", a, op, b)));
    Json answer = message("assistant", chinese ? fmt::format("{} {} {} = {}。", a, op, b, result) : fmt::format("{} {} {} = {}.", a, op, b, result));
    std::string reasoning;
    if (multiply) {
      reasoning = chinese ? fmt::format("{} × {} = {} × {} + {} × {} = {}。", a, b, a, b / 10 * 10, a, b % 10, result)
                          : fmt::format("{} × {} = {} × {} + {} × {} = {}.", a, b, a, b / 10 * 10, a, b % 10, result);
    } else {
      reasoning = chinese ? fmt::format("先算 {} + {}，结果是 {}。", a, b, result) : fmt::format("Add {} and {} to get {}.", a, b, result);
    }
    answer["reasoning_content"] = reasoning;
    messages.push_back(answer);
    return Json{{"messages", messages}};
  }

  Json weather(bool chinese) {
    const Bilingual& city = pick_from(kCities);
    const Bilingual& condition = pick_from(kConditions);
    const int temperature = -5 + pick(36);
    Json messages = Json::array();
    messages.push_back(message("system", chinese ? kPersonaZh : kPersonaEn));
    messages.push_back(message("user", chinese ? fmt::format("{}现在天气怎么样？", city.zh) : fmt::format("What's the weather in {} right now?", city.en)));
    Json call = message("assistant", "");
    call["tool_calls"] = Json::array({Json{{"type", "function"},
                                            {"function", {{"name", "get_weather"}, {"arguments", {{"city", city.en}, {"unit", "celsius"}}}}}}});
    messages.push_back(call);
    Json result = message("tool", Json{{"city", city.en}, {"temp_c", temperature}, {"condition", condition.en}}.dump());
    messages.push_back(result);
    messages.push_back(message("assistant", chinese ? fmt::format("{}现在{}，气温 {}°C。", city.zh, condition.zh, temperature)
                                                    : fmt::format("It is {} and {}°C in {}.", condition.en, temperature, city.en)));
    return Json{{"messages", messages}, {"tools", Json::array({weather_tool()})}};
  }

  Json translation(bool to_chinese) {
    const Bilingual& phrase = pick_from(kPhrases);
    Json messages = Json::array();
    if (chance(50)) messages.push_back(message("system", kPersonaEn));
    messages.push_back(message("user", to_chinese ? fmt::format("Translate into Chinese: {}", phrase.en)
                                                  : fmt::format("把这句话翻译成英文：{}", phrase.zh)));
    // Inline thinking, the form many reasoning data sets use.
    const std::string thought = to_chinese ? fmt::format("\"{}\" in Chinese is \"{}\".", phrase.en, phrase.zh)
                                           : fmt::format("“{}”的英文是 \"{}\"。", phrase.zh, phrase.en);
    messages.push_back(message("assistant", "<think>\n" + thought + "\n</think>\n\n" + (to_chinese ? phrase.zh : phrase.en)));
    return Json{{"messages", messages}};
  }

  Json introduction(bool chinese) {
    Json messages = Json::array();
    messages.push_back(message("system", chinese ? kPersonaZh : kPersonaEn));
    messages.push_back(message("user", chinese ? "你好！你是谁？" : "Hi! Who are you?"));
    messages.push_back(message("assistant", chinese ? "你好！我是琪琪，一个可以用中文和英文聊天的助手。" : "Hi! I'm Qiqi, an assistant who chats in English and Chinese."));
    if (chance(60)) {
      messages.push_back(message("user", chinese ? "你能做什么？" : "What can you do?"));
      messages.push_back(message("assistant", chinese ? "我可以做简单的计算、翻译短句，还能查天气。" : "I can do quick math, translate short phrases and look up the weather."));
    }
    return Json{{"messages", messages}};
  }

  Json alpaca() {
    const Bilingual& phrase = pick_from(kPhrases);
    const int kind = pick(3);
    Json record;
    if (kind == 0) {
      record = {{"instruction", "Translate the input into Chinese."}, {"input", phrase.en}, {"output", phrase.zh}};
    } else if (kind == 1) {
      record = {{"instruction", "将输入翻译成英文。"}, {"input", phrase.zh}, {"output", phrase.en}};
    } else {
      const int n = 2 + pick(20);
      record = {{"instruction", fmt::format("Is {} an even number? Answer yes or no.", n)}, {"input", ""}, {"output", n % 2 == 0 ? "Yes." : "No."}};
    }
    if (chance(50)) record["system"] = kPersonaEn;
    return record;
  }

  Json sharegpt() {
    const int a = 1 + pick(9), b = 1 + pick(9);
    Json turns = Json::array();
    turns.push_back({{"from", "human"}, {"value", fmt::format("{} 个苹果加 {} 个苹果是几个？", a, b)}});
    turns.push_back({{"from", "gpt"}, {"value", fmt::format("一共 {} 个苹果。", a + b)}});
    turns.push_back({{"from", "human"}, {"value", "And in English?"}});
    turns.push_back({{"from", "gpt"}, {"value", fmt::format("{} apples in total.", a + b)}});
    return Json{{"conversations", turns}, {"system", kPersonaZh}};
  }

 private:
  SplitMix64 rng_;
};

std::string lines(const std::vector<Json>& records) {
  std::string out;
  for (const auto& record : records) out += record.dump() + "\n";
  return out;
}

}  // namespace

std::vector<DemoFile> demo_dataset_files() {
  DemoWriter writer(kDemoSeed);
  std::vector<Json> chat, alpaca, sharegpt;
  for (int i = 0; i < 240; ++i) {
    const bool chinese = writer.chance(50);
    switch (writer.pick(4)) {
      case 0: chat.push_back(writer.arithmetic(chinese)); break;
      case 1: chat.push_back(writer.weather(chinese)); break;
      case 2: chat.push_back(writer.translation(chinese)); break;
      default: chat.push_back(writer.introduction(chinese)); break;
    }
  }
  for (int i = 0; i < 60; ++i) alpaca.push_back(writer.alpaca());
  for (int i = 0; i < 60; ++i) sharegpt.push_back(writer.sharegpt());
  return {{"demo_chat.jsonl", lines(chat)}, {"demo_alpaca.jsonl", lines(alpaca)}, {"demo_sharegpt.jsonl", lines(sharegpt)}};
}

std::vector<std::string> write_demo_dataset(const std::string& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  QFT_CHECK(!ec, "--write-demo-data {}: cannot create the directory ({})", directory, ec.message());
  std::vector<std::string> written;
  for (const DemoFile& file : demo_dataset_files()) {
    const std::string path = (std::filesystem::path(directory) / file.name).string();
    write_file_atomic(path, file.contents);
    written.push_back(path);
  }
  return written;
}

}  // namespace qft::data
