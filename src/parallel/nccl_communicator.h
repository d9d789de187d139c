// The NCCL implementation of Communicator: collectives on CUDA tensors, enqueued on a communication
// stream of the rank's GPU so that they can overlap compute. A collective waits for the work already
// queued on the caller's current stream (so it reads finished data); Work::wait() makes the caller's
// stream wait for the collective (it does not block the host). CPU tensors are staged through the GPU
// (scalars such as token counts), and then wait() does block until the result is back.
//
// Built only where NCCL was found at configure time (QFT_NCCL); nccl_available() says so at run time.
#pragma once

#include <memory>
#include <string>

#include "parallel/communicator.h"

namespace qft::parallel {

bool nccl_available();

// The NCCL communicator of the ranks of `bootstrap` (an MPI communicator: rank 0 creates the NCCL
// unique id and broadcasts it over `bootstrap`), on this rank's current CUDA device. Every rank of
// `bootstrap` must call it, each with its own GPU current (one GPU per rank).
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, const std::string& name);

}  // namespace qft::parallel
