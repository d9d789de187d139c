#include "parallel/rank_grid.h"

#include <fmt/format.h>

#include "core/error.h"

namespace qft::parallel {

RankGrid::RankGrid(int world_size, int tensor_parallel_size) : world_size_(world_size), tensor_(tensor_parallel_size) {
  QFT_CHECK(world_size >= 1, "the world has {} ranks", world_size);
  QFT_CHECK(tensor_parallel_size >= 1, "tensor_parallel_size must be at least 1, got {}", tensor_parallel_size);
  QFT_CHECK(world_size % tensor_parallel_size == 0,
            "tensor_parallel_size {} does not divide the {} ranks of the job (the data-parallel size is the number of "
            "ranks divided by it)",
            tensor_parallel_size, world_size);
  data_ = world_size / tensor_parallel_size;
}

GridCoordinates RankGrid::coordinates(int rank) const {
  QFT_CHECK(rank >= 0 && rank < world_size_, "rank {} is outside the grid of {} ranks", rank, world_size_);
  return GridCoordinates{rank % tensor_, rank / tensor_};
}

int RankGrid::rank_of(GridCoordinates c) const {
  QFT_CHECK(c.tensor >= 0 && c.tensor < tensor_ && c.data >= 0 && c.data < data_,
            "grid coordinates (tensor {}, data {}) are outside {}", c.tensor, c.data, describe());
  return c.data * tensor_ + c.tensor;
}

std::vector<int> RankGrid::tensor_parallel_group(int rank) const {
  const GridCoordinates c = coordinates(rank);
  std::vector<int> out;
  for (int t = 0; t < tensor_; ++t) out.push_back(rank_of({t, c.data}));
  return out;
}

std::vector<int> RankGrid::data_parallel_group(int rank) const {
  const GridCoordinates c = coordinates(rank);
  std::vector<int> out;
  for (int d = 0; d < data_; ++d) out.push_back(rank_of({c.tensor, d}));
  return out;
}

std::string RankGrid::describe() const {
  return fmt::format("{} rank{} = tensor parallel {} × data parallel {}", world_size_, world_size_ == 1 ? "" : "s",
                     tensor_, data_);
}

ParallelGroups make_parallel_groups(Communicator& world, const RankGrid& grid) {
  QFT_CHECK(world.size() == grid.world_size(), "the rank grid is for {} ranks but the job has {}", grid.world_size(),
            world.size());
  const GridCoordinates c = grid.coordinates(world.rank());
  ParallelGroups groups;
  groups.world = &world;
  // Same color = same group; the key orders ranks in it by their grid coordinate.
  groups.tensor = world.split(c.data, c.tensor, "tensor-parallel");
  groups.data = world.split(c.tensor, c.data, "data-parallel");
  return groups;
}

}  // namespace qft::parallel
