#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "core/error.h"
#include "text/answer_extraction.h"

namespace {

using namespace qft::text;
using std::nullopt;
using std::optional;
using std::string;

TEST(AnswerExtraction, RuleNames) {
  for (const char* name : {"last_number", "boxed", "exact", "choice"})
    EXPECT_STREQ(answer_rule_name(*parse_answer_rule(name)), name);
  EXPECT_FALSE(parse_answer_rule("last-number").has_value());
  EXPECT_FALSE(parse_answer_rule("").has_value());
}

TEST(AnswerExtraction, SplitThinking) {
  ThinkingSplit s = split_thinking("<think>\nadd them: 2+2\n</think>\n\nThe answer is 4.");
  EXPECT_TRUE(s.used_thinking);
  EXPECT_EQ(s.answer, "\n\nThe answer is 4.");
  // An empty block (enable_thinking=false puts one in the prompt; a model may also write one).
  s = split_thinking("<think>\n\n</think>\n\n7");
  EXPECT_FALSE(s.used_thinking);
  EXPECT_EQ(s.answer, "\n\n7");
  // Unclosed: everything after <think> is thinking, nothing is an answer (numbers in it do not count).
  s = split_thinking("<think>maybe 12 or 13");
  EXPECT_TRUE(s.used_thinking);
  EXPECT_EQ(s.answer, "");
  // Opened by the template in the prompt: the text starts inside the block.
  s = split_thinking("so 5</think>\nAnswer: 6");
  EXPECT_TRUE(s.used_thinking);
  EXPECT_EQ(s.answer, "\nAnswer: 6");
  s = split_thinking("no block at all: 9");
  EXPECT_FALSE(s.used_thinking);
  EXPECT_EQ(s.answer, "no block at all: 9");
  // Only the first block is removed; text before it stays.
  s = split_thinking("a <think>x</think> b <think>y</think> c");
  EXPECT_EQ(s.answer, "a  b <think>y</think> c");
}

TEST(AnswerExtraction, Normalize) {
  EXPECT_EQ(normalize_answer("  Paris.\n"), "paris");
  EXPECT_EQ(normalize_answer("New\t\tYORK  City!?"), "new york city");
  EXPECT_EQ(normalize_answer("a . b ."), "a . b");  // only trailing punctuation goes
  EXPECT_EQ(normalize_answer("Élan"), "Élan");     // ASCII case folding only: non-ASCII bytes stay
  EXPECT_EQ(normalize_answer(" ...;"), "");
  EXPECT_EQ(normalize_answer("(x)"), "(x)");
}

TEST(AnswerExtraction, LastNumber) {
  EXPECT_EQ(last_number("It costs $1,000 in total."), optional<string>("1000"));
  EXPECT_EQ(last_number("from 3 to 1000.0"), optional<string>("1000.0"));
  EXPECT_EQ(last_number("x = -5"), optional<string>("-5"));
  EXPECT_EQ(last_number("pages 3-5"), optional<string>("5"));  // a range, not minus five
  EXPECT_EQ(last_number("the list 1,2,3"), optional<string>("3"));
  EXPECT_EQ(last_number("12,345,6789"), optional<string>("6789"));  // "12,345" then a new number
  EXPECT_EQ(last_number("1234,567"), optional<string>("567"));      // more than 3 digits before a comma
  EXPECT_EQ(last_number("The answer is 42."), optional<string>("42"));
  EXPECT_EQ(last_number("x2 and v3"), nullopt);                  // digits glued to a letter
  EXPECT_EQ(last_number("version 1.2.5"), optional<string>("1.2"));  // ".5" follows a '.'
  EXPECT_EQ(last_number("no digits"), nullopt);
  EXPECT_EQ(last_number("-"), nullopt);
  EXPECT_EQ(last_number("ends with 7"), optional<string>("7"));
}

TEST(AnswerExtraction, ParseNumber) {
  EXPECT_EQ(parse_number(" 1,000 "), optional<double>(1000.0));
  EXPECT_EQ(parse_number("-2.5"), optional<double>(-2.5));
  EXPECT_EQ(parse_number("1,0000"), nullopt);
  EXPECT_EQ(parse_number("12 apples"), nullopt);
  EXPECT_EQ(parse_number(""), nullopt);
}

TEST(AnswerExtraction, LastBoxed) {
  EXPECT_EQ(last_boxed("so \\boxed{\\frac{1}{2}} done"), optional<string>("\\frac{1}{2}"));
  EXPECT_EQ(last_boxed("\\boxed{1} then \\boxed{2}"), optional<string>("2"));
  EXPECT_EQ(last_boxed("\\boxed{3} and \\boxed{4"), optional<string>("3"));  // the unbalanced last one is skipped
  EXPECT_EQ(last_boxed("\\boxed{\\boxed{5}}"), optional<string>("5"));         // the last by position: the inner
  EXPECT_EQ(last_boxed("\\boxed{}"), optional<string>(""));
  EXPECT_EQ(last_boxed("boxed{6}"), nullopt);
  EXPECT_EQ(last_boxed("nothing"), nullopt);
}

TEST(AnswerExtraction, LastChoice) {
  EXPECT_EQ(last_choice("The answer is (B)."), optional<char>('B'));
  EXPECT_EQ(last_choice("Answer: c"), optional<char>('C'));  // after the cue lower case counts
  EXPECT_EQ(last_choice("B. because A is wrong"), optional<char>('A'));
  EXPECT_EQ(last_choice("answer: D. A good choice."), optional<char>('D'));  // the cue beats a later letter
  EXPECT_EQ(last_choice("I think it is C"), optional<char>('C'));
  EXPECT_EQ(last_choice("I think"), optional<char>('I'));  // I is a choice letter (A-J) when standalone
  EXPECT_EQ(last_choice("Kilo and Zulu"), nullopt);           // letters inside words and K-Z do not count
  EXPECT_EQ(last_choice("option (E)"), optional<char>('E'));
  EXPECT_EQ(last_choice("the answer is because"), nullopt);  // "b" starts a word
  EXPECT_EQ(last_choice("answers: X, then F"), optional<char>('F'));
  EXPECT_EQ(last_choice("lower b alone"), nullopt);  // lower case only after the cue
}

TEST(AnswerExtraction, ReferencesAreChecked) {
  EXPECT_EQ(canonical_reference(AnswerRule::kLastNumber, " 1,000 "), "1000");
  EXPECT_EQ(canonical_reference(AnswerRule::kChoice, "(b)"), "B");
  EXPECT_EQ(canonical_reference(AnswerRule::kChoice, "C."), "C");
  EXPECT_EQ(canonical_reference(AnswerRule::kExact, " Paris. "), "paris");
  try {
    canonical_reference(AnswerRule::kLastNumber, "twelve");
    FAIL() << "no error";
  } catch (const qft::Error& e) {
    EXPECT_NE(string(e.what()).find("expected \"answer\" to be a number"), string::npos) << e.what();
  }
  EXPECT_THROW(canonical_reference(AnswerRule::kChoice, "K"), qft::Error);
  EXPECT_THROW(canonical_reference(AnswerRule::kChoice, "AB"), qft::Error);
  EXPECT_THROW(canonical_reference(AnswerRule::kExact, " . "), qft::Error);
  EXPECT_THROW(canonical_reference(AnswerRule::kBoxed, ""), qft::Error);
}

TEST(AnswerExtraction, Matching) {
  auto check = [](AnswerRule rule, const string& generated, const string& reference) {
    const string answer = split_thinking(generated).answer;
    return answer_matches(rule, extract_answer(rule, answer), canonical_reference(rule, reference));
  };
  EXPECT_TRUE(check(AnswerRule::kLastNumber, "<think>maybe 7</think>It is 1,000.", "1000.0"));
  EXPECT_FALSE(check(AnswerRule::kLastNumber, "<think>it is 1000</think>no idea", "1000"));  // thinking ignored
  EXPECT_TRUE(check(AnswerRule::kLastNumber, "0.1+0.2 = 0.30000000000000004", "0.3"));
  EXPECT_FALSE(check(AnswerRule::kLastNumber, "1001", "1000"));
  EXPECT_TRUE(check(AnswerRule::kBoxed, "\\boxed{ 1,000 }", "1000"));  // numbers compare as numbers
  EXPECT_TRUE(check(AnswerRule::kBoxed, "\\boxed{Paris}", "paris"));
  EXPECT_FALSE(check(AnswerRule::kBoxed, "Paris", "paris"));  // no box, no answer
  EXPECT_TRUE(check(AnswerRule::kExact, "  The  Nile.\n", "the nile"));
  EXPECT_FALSE(check(AnswerRule::kExact, "The Nile river", "the nile"));
  EXPECT_TRUE(check(AnswerRule::kChoice, "<think>A? no.</think>Answer: (C)", "c"));
  EXPECT_FALSE(check(AnswerRule::kChoice, "no letter here", "A"));
  EXPECT_FALSE(answer_matches(AnswerRule::kExact, nullopt, "x"));
}

}  // namespace
