#include <gtest/gtest.h>

#include "core/config_reader.h"
#include "core/error.h"
#include "test_support.h"

namespace {

qft::ConfigReader reader_of(const std::string& yaml) { return qft::ConfigReader(YAML::Load(yaml), "cfg.yaml"); }

using qft::test::error_of;

TEST(ConfigReader, ReadsTypedValues) {
  auto r = reader_of("a: 3\nb: 1e-4\nc: true\nd: [x, y]\ne: hello\n");
  EXPECT_EQ(r.get_int("a"), 3);
  EXPECT_DOUBLE_EQ(r.get_double("b"), 1e-4);
  EXPECT_TRUE(r.get_bool("c", false));
  EXPECT_EQ(r.get_string_list("d", {}), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(r.get_string("e"), "hello");
  EXPECT_EQ(r.get_int("missing", 7), 7);
  EXPECT_NO_THROW(r.finish());
}

TEST(ConfigReader, UnknownKeySuggestsClosest) {
  auto r = reader_of("training:\n  learning_rat: 0.1\n");
  auto t = r.section("training");
  t.get_double("learning_rate", 1e-4);
  const std::string message = error_of([&] { t.finish(); });
  EXPECT_NE(message.find("cfg.yaml:2"), std::string::npos) << message;
  EXPECT_NE(message.find("training.learning_rat"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'learning_rate'"), std::string::npos) << message;
}

TEST(ConfigReader, WrongTypeNamesKeyAndValue) {
  auto r = reader_of("x:\n  steps: 1.5\n");
  auto x = r.section("x");
  const std::string message = error_of([&] { x.get_int("steps", 1); });
  EXPECT_NE(message.find("x.steps"), std::string::npos) << message;
  EXPECT_NE(message.find("integer"), std::string::npos) << message;
  EXPECT_NE(message.find("1.5"), std::string::npos) << message;
}

TEST(ConfigReader, ChoiceRejectsOthers) {
  auto r = reader_of("s: cosin\n");
  const std::string message = error_of([&] { r.get_choice("s", {"linear", "cosine"}, "linear"); });
  EXPECT_NE(message.find("did you mean 'cosine'"), std::string::npos) << message;
}

TEST(ConfigReader, MissingRequiredKey) {
  auto r = reader_of("a: 1\n");
  EXPECT_NE(error_of([&] { r.get_string("path"); }).find("missing required key 'path'"), std::string::npos);
}

TEST(ConfigReader, RequiredGettersCheckPresenceThenType) {
  auto r = reader_of("n: 3\nx: 0.5\nnothing: null\nbad: [1]\n");
  EXPECT_EQ(r.get_int("n"), 3);
  EXPECT_DOUBLE_EQ(r.get_double("x"), 0.5);
  EXPECT_NE(error_of([&] { r.get_int("nothing"); }).find("missing required key 'nothing'"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_double("absent"); }).find("missing required key 'absent'"), std::string::npos);
  EXPECT_NE(error_of([&] { r.get_int("bad"); }).find("expected an integer, got a list"), std::string::npos);
}

TEST(ConfigReader, NonAsciiNumberAndComplexKeyAreQftErrors) {
  auto r = reader_of("x: \"\u00e9\"\n? [a, b]\n: 1\n");
  EXPECT_NE(error_of([&] { r.get_double("x"); }).find("expected a number"), std::string::npos);
  EXPECT_NE(error_of([&] { r.finish(); }).find("plain names"), std::string::npos);
}

}  // namespace

namespace {

TEST(ConfigReader, NanAndInfinityAreNotNumbersAConfigMeans) {
  for (const char* value : {".nan", "NaN", ".inf", "-.inf", "inf", "1e999", "-1e999"}) {
    auto r = reader_of(std::string("training:\n  learning_rate: ") + value + "\n");
    auto t = r.section("training");
    const std::string message = error_of([&] { t.get_double("learning_rate", 1e-4); });
    EXPECT_NE(message.find("cfg.yaml:2: 'training.learning_rate': expected a finite number"), std::string::npos)
        << value << ": " << message;
  }
  auto r = reader_of("x: 1e-999\n");
  EXPECT_EQ(r.get_double("x", 1.0), 0.0);
}

TEST(ConfigReader, DuplicateKeysAreErrorsNamingBothLines) {
  const auto check = [](const std::string& yaml) {
    return error_of([&] { qft::check_no_duplicate_keys(YAML::Load(yaml), "cfg.yaml"); });
  };
  EXPECT_EQ(check("training:\n  learning_rate: 1\n  max_steps: 3\n  learning_rate: 2\n"),
            "cfg.yaml:4: duplicate key 'learning_rate' (also at line 2); YAML would keep only one of the two values");
  EXPECT_EQ(check("data:\n  datasets:\n    - path: a\n      path: b\n"),
            "cfg.yaml:4: duplicate key 'path' (also at line 3); YAML would keep only one of the two values");
  EXPECT_EQ(check("a: 1\nb: {a: 1}\nc: [{a: 1}, {a: 2}]\n"), "");
  // The same key in two sections is fine; so are aliases to one mapping.
  EXPECT_EQ(check("x: &m {k: 1}\ny: *m\n"), "");
}

}  // namespace
