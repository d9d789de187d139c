// core/json_reader: Python-json semantics, iterative parsing with a depth cap, located errors, bounded
// excerpts.
#include <cmath>
#include <string>

#include <gtest/gtest.h>

#include "core/json_reader.h"
#include "test_support.h"
#include "text/python_json.h"

namespace qft {
namespace {

using test::error_of;

TEST(JsonReader, ReadsOrdinaryJson) {
  const auto j = json::parse_ordered(R"( {"b": [1, -2, 3.5, true, false, null], "a": "x\u00e9\ud83d\ude00\n"} )", "t");
  EXPECT_EQ(j.begin().key(), "b");
  EXPECT_EQ(j["b"][1].get<int64_t>(), -2);
  EXPECT_DOUBLE_EQ(j["b"][2].get<double>(), 3.5);
  EXPECT_EQ(j["a"].get<std::string>(), "x\xc3\xa9\xf0\x9f\x98\x80\n");
  EXPECT_EQ(json::parse("18446744073709551615", "t").get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(json::parse("-9223372036854775808", "t").get<int64_t>(), INT64_MIN);
}

TEST(JsonReader, DuplicateKeysKeepFirstPositionAndLastValueLikeAPythonDict) {
  const auto j = json::parse_ordered(R"({"a": 1, "b": 2, "a": 3})", "t");
  EXPECT_EQ(text::python_json_dumps(j), R"({"a": 3, "b": 2})");
}

TEST(JsonReader, DuplicateKeysCanBeRefused) {
  json::ReadOptions strict;
  strict.reject_duplicate_keys = true;
  EXPECT_EQ(error_of([&] { json::parse("{\"a\": {\"x\": 1,\n \"x\": 2}}", "h", strict); }),
            "h: line 2 column 2: malformed JSON: duplicate key \"x\"");
  EXPECT_NO_THROW(json::parse(R"({"a": {"x": 1}, "b": {"x": 2}})", "h", strict));
}

TEST(JsonReader, BigIntegersKeepTheirDigits) {
  const auto j = json::parse_ordered(R"({"n": 123456789012345678901234567890, "m": -99999999999999999999})", "t");
  EXPECT_TRUE(json::is_big_integer(j["n"]));
  EXPECT_EQ(json::big_integer_digits(j["n"]), "123456789012345678901234567890");
  EXPECT_EQ(text::python_json_dumps(j), R"({"n": 123456789012345678901234567890, "m": -99999999999999999999})");
  EXPECT_EQ(json::excerpt(j), R"({"n": 123456789012345678901234567890, "m": -99999999999999999999})");
}

TEST(JsonReader, NonFiniteNumbersAsPythonWhenAllowedElseLocatedErrors) {
  json::ReadOptions python;
  python.allow_non_finite = true;
  const auto j = json::parse_ordered("[1e400, -1e400, 1e-400, NaN, Infinity, -Infinity]", "t", python);
  EXPECT_EQ(text::python_json_dumps(j), "[Infinity, -Infinity, 0.0, NaN, Infinity, -Infinity]");
  EXPECT_EQ(error_of([] { json::parse("{\n \"rope_theta\": 1e999}", "config.json"); }),
            "config.json: line 2 column 16: malformed JSON: the number 1e999 overflows a double");
  EXPECT_EQ(error_of([] { json::parse("[NaN]", "c.json"); }),
            "c.json: line 1 column 2: malformed JSON: 'NaN' is not a finite number");
}

TEST(JsonReader, DeepNestingIsAnErrorNotACrash) {
  const std::string deep(200000, '[');
  const std::string message = error_of([&] { json::parse(deep, "deep.json"); });
  EXPECT_EQ(message, "deep.json: line 1 column 513: malformed JSON: nested deeper than 512 levels");
  const std::string objects = [] {
    std::string s;
    for (int i = 0; i < 100000; ++i) s += "{\"a\":";
    return s;
  }();
  EXPECT_NE(error_of([&] { json::parse(objects, "o.json"); }).find("nested deeper than 512 levels"), std::string::npos);
  // Exactly at the cap is fine.
  const std::string ok = std::string(512, '[') + std::string(512, ']');
  EXPECT_NO_THROW(json::parse(ok, "ok.json"));
}

TEST(JsonReader, SyntaxErrorsNameLineColumnAndWhatWasExpected) {
  const auto check = [](const std::string& text, const std::string& expected) {
    EXPECT_EQ(error_of([&] { json::parse(text, "f.json"); }), "f.json: " + expected) << text;
  };
  check("", "line 1 column 1: malformed JSON: unexpected end of text, expected a value");
  check("{\"a\" 1}", "line 1 column 6: malformed JSON: expected ':' after the key");
  check("[1,\n2", "line 2 column 2: malformed JSON: unexpected end of text, expected ',' or ']'");
  check("[1 2]", "line 1 column 4: malformed JSON: expected ',' or ']'");
  check("{} x", "line 1 column 4: malformed JSON: extra data after the JSON value");
  check("[01]", "line 1 column 3: malformed JSON: expected ',' or ']'");
  check("\"a\tb\"", "line 1 column 3: malformed JSON: control character in a string (write it as an escape)");
  check("\"\\ud800\"", "line 1 column 2: malformed JSON: lone surrogate \\ud800 (it cannot be written as UTF-8 text)");
  check("\"\xff\"", "line 1 column 2: malformed JSON: invalid UTF-8 in a string");
  check("\"\\x\"", "line 1 column 2: malformed JSON: invalid escape in a string");
  check("{\"a\":1,}", "line 1 column 8: malformed JSON: expected a key in double quotes");
  check("tru", "line 1 column 1: malformed JSON: expected a value (object, list, string, number, true, false or null)");
  try {
    json::parse("[1,\n x]", "f.json");
    FAIL();
  } catch (const json::JsonSyntaxError& e) {
    EXPECT_EQ(e.byte(), 5u);
    EXPECT_EQ(e.line(), 2u);
    EXPECT_EQ(e.column(), 2u);
  }
}

TEST(JsonReader, ExcerptIsBoundedInLengthAndDepth) {
  nlohmann::json big = nlohmann::json::array();
  for (int i = 0; i < 100000; ++i) big.push_back(i);
  EXPECT_LE(json::excerpt(big).size(), 80u + 3u);
  EXPECT_EQ(json::excerpt(nlohmann::json::parse("[[[[[1]]]]]")), "[[[[…]]]]");
  EXPECT_EQ(json::excerpt(nlohmann::json(std::string(1000000, 'x')), 10), "\"xxxxxxxxx…");
  EXPECT_EQ(json::excerpt(nlohmann::json{{"k", "v"}}), R"({"k": "v"})");
}

}  // namespace
}  // namespace qft
