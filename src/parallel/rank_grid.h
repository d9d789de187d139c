// Which rank does what: the world is a grid of tensor-parallel × data-parallel coordinates, tensor
// parallelism fastest (Megatron's default order "tp-dp"), so that the ranks of one tensor-parallel group
// are neighbours on one node (NVLink) and data-parallel groups stride across nodes.
//
//   rank = data * tensor_parallel_size + tensor
//
// Worked example, 8 ranks on 2 nodes of 4 GPUs, tensor_parallel_size 2 → data-parallel size 4:
//   tensor-parallel groups: [0 1] [2 3] [4 5] [6 7]   (each inside one node)
//   data-parallel groups:   [0 2 4 6] [1 3 5 7]       (across both nodes)
// Later dimensions fold into the same grid: pipeline stages slowest (outside data), and experts (Qwen3-MoE)
// over the data × tensor ranks of the MoE layers, as Megatron's "MoE parallel folding" does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace qft::parallel {

struct GridCoordinates {
  int tensor = 0;  // rank within its tensor-parallel group
  int data = 0;    // rank within its data-parallel group
};

class RankGrid {
 public:
  // Errors (naming the key) unless tensor_parallel_size divides world_size.
  RankGrid(int world_size, int tensor_parallel_size);

  int world_size() const { return world_size_; }
  int tensor_parallel_size() const { return tensor_; }
  int data_parallel_size() const { return data_; }

  GridCoordinates coordinates(int rank) const;
  int rank_of(GridCoordinates c) const;
  // The world ranks of the group `rank` belongs to, in group-rank order.
  std::vector<int> tensor_parallel_group(int rank) const;
  std::vector<int> data_parallel_group(int rank) const;

  // "8 ranks = tensor parallel 2 × data parallel 4" (for the start-up log).
  std::string describe() const;

 private:
  int world_size_ = 1;
  int tensor_ = 1;
  int data_ = 1;
};

// The communicators of one rank, split from the world along the grid. The model and the layers take the
// one they need (tensor-parallel layers `tensor`, gradient reduction and ZeRO `data`).
struct ParallelGroups {
  Communicator* world = nullptr;  // not owned
  std::unique_ptr<Communicator> tensor;
  std::unique_ptr<Communicator> data;
};

// Collective over `world`: every rank must call it with the same grid.
ParallelGroups make_parallel_groups(Communicator& world, const RankGrid& grid);

}  // namespace qft::parallel
