#pragma once

#include "parallel/mpi_communicator.h"

namespace qft::test {

extern parallel::MpiRuntime* g_mpi;
// The communicator under test: MPI's world, or (QFT_TEST_COMMUNICATOR=nccl, on GPUs) an NCCL one.
extern parallel::Communicator* g_world;
inline parallel::Communicator& world() { return *g_world; }

}  // namespace qft::test
