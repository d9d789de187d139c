// gtest main for the communicator tests: one MPI runtime for the whole binary, which ctest runs alone
// and under `mpirun --oversubscribe -np 2` and `-np 4`. Only rank 0 prints gtest's report; a failure on
// any rank makes that rank exit non-zero, and so mpirun.
#include <gtest/gtest.h>

#include "parallel_test_support.h"

namespace qft::test {

parallel::MpiRuntime* g_mpi = nullptr;

}  // namespace qft::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  qft::parallel::MpiRuntime mpi;
  qft::test::g_mpi = &mpi;
  if (mpi.world().rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int failed = RUN_ALL_TESTS();
  // Every rank's verdict: a rank whose check failed must fail the job even if its exit races the others.
  const int64_t failures = mpi.world().all_reduce_sum(static_cast<int64_t>(failed != 0));
  if (mpi.world().rank() == 0 && failures > 0) std::fprintf(stderr, "%lld rank(s) had failures\n", (long long)failures);
  return failures > 0 ? 1 : 0;
}
