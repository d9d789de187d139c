#include <gtest/gtest.h>

#include "dist/world.h"

TEST(World, SingletonIsAWorldOfOne) {
  auto& world = qft::dist::World::instance();
  EXPECT_EQ(world.size(), 1);
  EXPECT_EQ(world.rank(), 0);
  EXPECT_TRUE(world.is_main());
  at::Tensor t = at::arange(4, at::kFloat);
  world.all_reduce_sum(t);
  EXPECT_TRUE(at::equal(t, at::arange(4, at::kFloat)));
  EXPECT_EQ(world.all_reduce_sum(int64_t{5}), 5);
}
