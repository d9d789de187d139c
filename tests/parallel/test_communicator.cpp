// The MPI communicator under 1, 2 and 4 ranks, with rank-valued inputs (Megatron's test_mappings style):
// every rank contributes a tensor that depends on its rank, so a sum, an order or a range that went to
// the wrong place shows up as a wrong number.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "parallel/launch_check.h"
#include "parallel/rank_grid.h"
#include "parallel_test_support.h"

using namespace qft::parallel;
using qft::test::world;

namespace {

const auto f32 = at::TensorOptions().dtype(at::kFloat);
const auto i64 = at::TensorOptions().dtype(at::kLong);

// Uneven ranges for n elements: rank r gets r + 1 elements, the last rank what is left (maybe more).
std::vector<Range> staircase(int64_t n, int size) {
  std::vector<Range> out;
  int64_t begin = 0;
  for (int r = 0; r < size; ++r) {
    const int64_t len = r + 1 < size ? std::min<int64_t>(r + 1, n - begin) : n - begin;
    out.push_back({begin, begin + len});
    begin += len;
  }
  return out;
}

// Runs `check` with the communicator splitting its work into calls of at most `max_count` elements.
// (MPI only: other communicators count in 64 bits and run `check` once.)
template <typename F>
void with_max_count(int64_t max_count, F&& check) {
  auto* mpi = dynamic_cast<MpiCommunicator*>(&world());
  if (mpi == nullptr) {
    if (max_count == INT32_MAX) check();
    return;
  }
  mpi->set_max_count(max_count);
  check();
  mpi->set_max_count(INT32_MAX);
}

}  // namespace

TEST(SplitEvenly, SizesDifferByAtMostOneAndTile) {
  const auto r = split_evenly(10, 4);
  ASSERT_EQ(r.size(), 4u);
  EXPECT_EQ(r[0], (Range{0, 3}));
  EXPECT_EQ(r[1], (Range{3, 6}));
  EXPECT_EQ(r[2], (Range{6, 8}));
  EXPECT_EQ(r[3], (Range{8, 10}));
  EXPECT_EQ(split_evenly(2, 4)[3], (Range{2, 2}));
}

TEST(Communicator, AllReduceSumsRankValues) {
  const int size = world().size(), rank = world().rank();
  for (int64_t max_count : {int64_t{INT32_MAX}, int64_t{3}}) {
    with_max_count(max_count, [&] {
      at::Tensor t = at::arange(10, f32) + static_cast<float>(rank + 1);
      world().all_reduce_sum(t);
      const at::Tensor expected = at::arange(10, f32) * size + static_cast<float>(size * (size + 1) / 2);
      EXPECT_TRUE(at::equal(t, expected)) << "max_count " << max_count << ": " << t;
    });
  }
  at::Tensor l = at::full({3}, int64_t{1} << 40, i64) * (rank + 1);
  world().all_reduce_sum(l);
  EXPECT_EQ(l[2].item<int64_t>(), (int64_t{1} << 40) * size * (size + 1) / 2);
  EXPECT_EQ(world().all_reduce_sum(static_cast<int64_t>(rank)), size * (size - 1) / 2);
  EXPECT_DOUBLE_EQ(world().all_reduce_sum(0.5 * rank), 0.25 * size * (size - 1));
}

TEST(Communicator, AsyncAllReducesCompleteOnWait) {
  const int size = world().size(), rank = world().rank();
  at::Tensor a = at::full({5}, static_cast<float>(rank), f32);
  at::Tensor b = at::full({7}, static_cast<double>(2 * rank), at::TensorOptions().dtype(at::kDouble));
  auto wa = world().all_reduce_sum_async(a);
  auto wb = world().all_reduce_sum_async(b);
  wb->wait();
  wa->wait();
  wa->wait();  // waiting twice is harmless
  EXPECT_EQ(a[4].item<float>(), static_cast<float>(size * (size - 1) / 2));
  EXPECT_EQ(b[6].item<double>(), static_cast<double>(size * (size - 1)));
}

TEST(Communicator, ReduceScatterLeavesEachRankTheSumOfItsRange) {
  const int size = world().size(), rank = world().rank();
  const int64_t n = 11;  // not a multiple of 2 or 4: uneven ranges
  for (const auto& ranges : {split_evenly(n, size), staircase(n, size)}) {
    for (int64_t max_count : {int64_t{INT32_MAX}, int64_t{2}}) {
      with_max_count(max_count, [&] {
        at::Tensor buffer = at::arange(n, f32) * static_cast<float>(rank + 1);
        world().reduce_scatter_sum(buffer, ranges);
        const Range mine = ranges[rank];
        const at::Tensor expected =
            at::arange(n, f32).narrow(0, mine.begin, mine.size()) * static_cast<float>(size * (size + 1) / 2);
        EXPECT_TRUE(at::equal(buffer.narrow(0, mine.begin, mine.size()), expected))
            << "range [" << mine.begin << ", " << mine.end << ") max_count " << max_count;
      });
    }
  }
}

TEST(Communicator, ReduceScatterOfASubspan) {
  // The ranges may tile a part of the buffer (a bucket of a larger flat buffer).
  const int size = world().size(), rank = world().rank();
  std::vector<Range> ranges = split_evenly(6, size);
  for (Range& r : ranges) r = {r.begin + 3, r.end + 3};
  at::Tensor buffer = at::full({12}, static_cast<float>(rank + 1), f32);
  world().reduce_scatter_sum(buffer, ranges);
  const Range mine = ranges[rank];
  EXPECT_TRUE(at::all(buffer.narrow(0, mine.begin, mine.size()) == static_cast<float>(size * (size + 1) / 2)).item<bool>());
  EXPECT_EQ(buffer[0].item<float>(), static_cast<float>(rank + 1));  // outside the span: untouched
}

TEST(Communicator, AllGatherPutsEveryRanksRangeInRankOrder) {
  const int size = world().size(), rank = world().rank();
  const int64_t n = 13;
  for (const auto& ranges : {split_evenly(n, size), staircase(n, size)}) {
    for (int64_t max_count : {int64_t{INT32_MAX}, int64_t{2}}) {
      with_max_count(max_count, [&] {
        at::Tensor buffer = at::full({n}, -1.0f, f32);
        const Range mine = ranges[rank];
        buffer.narrow(0, mine.begin, mine.size()).copy_(at::arange(mine.begin, mine.end, f32) + 100.0f * rank);
        auto work = world().all_gather_async(buffer, ranges);
        work->wait();
        for (int r = 0; r < size; ++r) {
          const at::Tensor expected = at::arange(ranges[r].begin, ranges[r].end, f32) + 100.0f * r;
          EXPECT_TRUE(at::equal(buffer.narrow(0, ranges[r].begin, ranges[r].size()), expected))
              << "range of rank " << r << " max_count " << max_count;
        }
      });
    }
  }
}

TEST(Communicator, BroadcastCopiesTheRootsTensor) {
  const int size = world().size(), rank = world().rank();
  at::Tensor t = at::full({4}, static_cast<int64_t>(rank * 10), i64);
  world().broadcast(t, size - 1);
  EXPECT_TRUE(at::all(t == static_cast<int64_t>((size - 1) * 10)).item<bool>());
  EXPECT_THROW(world().broadcast(t, size), qft::Error);
}

TEST(Communicator, BadRangesAreErrors) {
  at::Tensor buffer = at::zeros({8}, f32);
  std::vector<Range> too_few(static_cast<size_t>(world().size() + 1), Range{0, 0});
  EXPECT_THROW(world().reduce_scatter_sum(buffer, too_few), qft::Error);
  std::vector<Range> gap = split_evenly(8, world().size());
  gap.back() = {gap.back().begin, 9};  // past the end
  EXPECT_THROW(world().all_gather(buffer, gap), qft::Error);
}

TEST(Communicator, CheckSameOnAllRanks) {
  EXPECT_NO_THROW(world().check_same_on_all_ranks("the config hash", 42));
  if (world().size() > 1) {
    // Every rank sees every value, so every rank reports the first rank that differs.
    EXPECT_THROW(world().check_same_on_all_ranks("the config hash", static_cast<uint64_t>(world().rank())),
                 qft::Error);
  }
}

TEST(RankGrid, GroupsFollowTheMegatronOrder) {
  const RankGrid grid(8, 2);  // 8 = tensor parallel 2 × data parallel 4
  EXPECT_EQ(grid.data_parallel_size(), 4);
  EXPECT_EQ(grid.tensor_parallel_group(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(grid.tensor_parallel_group(5), (std::vector<int>{4, 5}));
  EXPECT_EQ(grid.data_parallel_group(0), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(grid.data_parallel_group(7), (std::vector<int>{1, 3, 5, 7}));
  EXPECT_EQ(grid.coordinates(5).tensor, 1);
  EXPECT_EQ(grid.coordinates(5).data, 2);
  EXPECT_EQ(grid.rank_of({1, 2}), 5);

  const RankGrid pure_tp(8, 8), pure_dp(8, 1);
  EXPECT_EQ(pure_tp.tensor_parallel_group(3), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(pure_tp.data_parallel_group(3), (std::vector<int>{3}));
  EXPECT_EQ(pure_dp.tensor_parallel_group(3), (std::vector<int>{3}));
  EXPECT_EQ(pure_dp.data_parallel_group(3), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));

  const RankGrid odd(6, 3);
  EXPECT_EQ(odd.tensor_parallel_group(4), (std::vector<int>{3, 4, 5}));
  EXPECT_EQ(odd.data_parallel_group(4), (std::vector<int>{1, 4}));
  // Every rank is in exactly one group of each kind.
  for (const RankGrid& g : {grid, pure_tp, pure_dp, odd}) {
    std::vector<int> tp_seen(g.world_size()), dp_seen(g.world_size());
    for (int r = 0; r < g.world_size(); ++r) {
      for (int m : g.tensor_parallel_group(r)) tp_seen[m] += g.tensor_parallel_group(m) == g.tensor_parallel_group(r);
      for (int m : g.data_parallel_group(r)) dp_seen[m] += g.data_parallel_group(m) == g.data_parallel_group(r);
    }
    for (int r = 0; r < g.world_size(); ++r) {
      EXPECT_EQ(tp_seen[r], g.tensor_parallel_size());
      EXPECT_EQ(dp_seen[r], g.data_parallel_size());
    }
  }
}

TEST(RankGrid, SizesThatDoNotDivideAreErrors) {
  try {
    RankGrid(8, 3);
    FAIL() << "no error";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("tensor_parallel_size 3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(RankGrid(4, 0), qft::Error);
}

TEST(RankGrid, SplitGroupsSumTheirMembers) {
  // The communicators split along the grid hold exactly the grid's groups: an all-reduce of the world
  // rank inside each gives the sum of that group's members.
  const int size = world().size(), rank = world().rank();
  for (int tp : {1, 2, 4}) {
    if (size % tp != 0) continue;
    const RankGrid grid(size, tp);
    ParallelGroups groups = make_parallel_groups(world(), grid);
    EXPECT_EQ(groups.tensor->size(), tp);
    EXPECT_EQ(groups.data->size(), size / tp);
    EXPECT_EQ(groups.tensor->rank(), grid.coordinates(rank).tensor);
    EXPECT_EQ(groups.data->rank(), grid.coordinates(rank).data);
    auto sum_of = [](const std::vector<int>& v) { return static_cast<int64_t>(std::accumulate(v.begin(), v.end(), 0)); };
    EXPECT_EQ(groups.tensor->all_reduce_sum(static_cast<int64_t>(rank)), sum_of(grid.tensor_parallel_group(rank)));
    EXPECT_EQ(groups.data->all_reduce_sum(static_cast<int64_t>(rank)), sum_of(grid.data_parallel_group(rank)));
    // Gathered order inside a group follows the group rank.
    at::Tensor members = at::zeros({tp}, i64);
    members[groups.tensor->rank()] = rank;
    groups.tensor->all_gather(members, split_evenly(tp, tp));
    const auto expected = grid.tensor_parallel_group(rank);
    for (int i = 0; i < tp; ++i) EXPECT_EQ(members[i].item<int64_t>(), expected[i]);
  }
}

TEST(LaunchCheck, SingletonsOfAMismatchedLauncherAreRefused) {
  // srun without PMIx support starts N singletons: each sees SLURM_NTASKS = N but a world of one.
  const int n = world().size();
  setenv("SLURM_PROCID", "0", 1);
  setenv("SLURM_NTASKS", std::to_string(n + 2).c_str(), 1);
  try {
    check_launcher_world_size(n);
    ADD_FAILURE() << "no error";
  } catch (const qft::Error& e) {
    EXPECT_NE(std::string(e.what()).find("srun --mpi=pmix"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("SLURM_NTASKS=" + std::to_string(n + 2)), std::string::npos) << e.what();
  }
  setenv("SLURM_NTASKS", std::to_string(n).c_str(), 1);
  EXPECT_NO_THROW(check_launcher_world_size(n));
  // In an sbatch script outside srun, SLURM_NTASKS describes the allocation, not this process's job.
  unsetenv("SLURM_PROCID");
  setenv("SLURM_NTASKS", std::to_string(n + 2).c_str(), 1);
  EXPECT_NO_THROW(check_launcher_world_size(n));
  unsetenv("SLURM_NTASKS");
}
