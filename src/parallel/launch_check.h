// Start-up check of what the launcher promised against what MPI delivered.
#pragma once

namespace qft::parallel {

// A launcher whose process manager this MPI cannot talk to (srun without --mpi=pmix, another MPI's mpirun)
// starts N independent singletons, each believing it is the whole job; they would all train on the full
// data and overwrite each other's files. Errors, naming the variable and what to do, when the launcher's
// environment (SLURM_NTASKS inside srun, OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_SIZE) says more processes
// than `world_size`.
void check_launcher_world_size(int world_size);

}  // namespace qft::parallel
