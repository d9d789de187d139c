// gtest main for the communicator tests: one MPI runtime for the whole binary, which ctest runs alone
// and under `mpirun --oversubscribe -np 2` and `-np 4`. Only rank 0 prints gtest's report; a failure on
// any rank makes that rank exit non-zero, and so mpirun. With QFT_TEST_COMMUNICATOR=nccl (GPU machines,
// one rank per GPU) the same tests run against the NCCL communicator.
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include <ATen/Context.h>

#include "parallel/nccl_communicator.h"
#include "parallel_test_support.h"

#ifdef QFT_NCCL
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace qft::test {

parallel::MpiRuntime* g_mpi = nullptr;
parallel::Communicator* g_world = nullptr;

}  // namespace qft::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  qft::parallel::MpiRuntime mpi;
  qft::test::g_mpi = &mpi;
  qft::test::g_world = &mpi.world();
  std::unique_ptr<qft::parallel::Communicator> nccl;
  const char* which = std::getenv("QFT_TEST_COMMUNICATOR");
  if (which != nullptr && std::strcmp(which, "nccl") == 0) {
#ifdef QFT_NCCL
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(mpi.local_rank()));
#endif
    nccl = qft::parallel::make_nccl_communicator(mpi.world(), "world (NCCL)");
    qft::test::g_world = nccl.get();
  }
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
