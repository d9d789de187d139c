#pragma once

#include "parallel/mpi_communicator.h"

namespace qft::test {

extern parallel::MpiRuntime* g_mpi;
inline parallel::Communicator& world() { return g_mpi->world(); }

}  // namespace qft::test
