// Row plans, labels across packed samples, and the two collations.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/packing.h"

namespace qft::data {
namespace {

TEST(PlanRows, BestFitInOrder) {
  // max 10: [6] [5] -> 4 fits row0 (room 4), 3 fits row1 (room 5 -> 2), 2 fits row1.
  const auto rows = plan_rows({6, 5, 4, 3, 2}, 10, true);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(rows[1], (std::vector<int64_t>{1, 3, 4}));
}

TEST(PlanRows, WithoutPackingOneSamplePerRow) {
  const auto rows = plan_rows({6, 5, 4}, 10, false);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[2], (std::vector<int64_t>{2}));
}

TEST(PlanRows, WindowsCloseRows) {
  const auto rows = plan_rows({2, 2, 2, 2}, 10, true, 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1], (std::vector<int64_t>{2, 3}));
}

TEST(PlanRows, EverySampleOnceAndNoRowOverflows) {
  std::vector<int64_t> lengths;
  for (int i = 0; i < 500; ++i) lengths.push_back(1 + (i * 37) % 100);
  const auto rows = plan_rows(lengths, 128, true, 64);
  std::vector<int> seen(lengths.size(), 0);
  for (const auto& row : rows) {
    int64_t total = 0;
    for (const int64_t s : row) {
      total += lengths[static_cast<size_t>(s)];
      ++seen[static_cast<size_t>(s)];
    }
    EXPECT_LE(total, 128);
  }
  for (const int count : seen) EXPECT_EQ(count, 1);
}

TEST(PlanRows, SampleLongerThanARowIsAnError) { EXPECT_THROW(plan_rows({11}, 10, true), Error); }

TEST(BuildRow, PositionsRestartAndFirstTokenOfEachSampleIsIgnored) {
  const TokenizedSample a{{10, 11, 12}, {1, 1, 0}};
  const TokenizedSample b{{20, 21}, {0, 1}};
  const RowData row = build_row({&a, &b});
  EXPECT_EQ(row.input_ids, (std::vector<int64_t>{10, 11, 12, 20, 21}));
  EXPECT_EQ(row.labels, (std::vector<int64_t>{-100, 11, -100, -100, 21}));
  EXPECT_EQ(row.position_ids, (std::vector<int64_t>{0, 1, 2, 0, 1}));
  EXPECT_EQ(row.segment_ids, (std::vector<int64_t>{0, 0, 0, 1, 1}));
  EXPECT_EQ(row.target_tokens(), 2);
}

TEST(BuildRow, AFirstTokenThatIsATargetIsStillIgnored) {
  const TokenizedSample a{{1, 2}, {1, 1}};
  const TokenizedSample b{{3, 4}, {1, 1}};
  const RowData row = build_row({&a, &b});
  EXPECT_EQ(row.labels, (std::vector<int64_t>{-100, 2, -100, 4}));
}

}  // namespace
}  // namespace qft::data
