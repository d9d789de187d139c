#include "parallel/launch_check.h"

#include <cstdlib>
#include <string>

#include "core/error.h"

namespace qft::parallel {

void check_launcher_world_size(int world_size) {
  for (const char* variable : {"SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    const char* value = std::getenv(variable);
    if (value == nullptr) continue;
    // SLURM_NTASKS is also set in an sbatch script outside srun; only a task started by srun has SLURM_PROCID.
    if (std::string(variable) == "SLURM_NTASKS" && std::getenv("SLURM_PROCID") == nullptr) continue;
    const long launched = std::strtol(value, nullptr, 10);
    QFT_CHECK(launched <= 1 || launched == world_size,
              "the launcher started {} processes ({}={}) but MPI sees a world of {}: each process would train alone. "
              "Under Slurm use `srun --mpi=pmix` (Open MPI needs PMIx; `srun --mpi=list` shows what the cluster has) "
              "or `mpirun` inside the allocation",
              launched, variable, value, world_size);
  }
}

}  // namespace qft::parallel
