// The memory report at start (issue 8): what the model state holds once loaded (measured: the allocator's
// bytes after the weights, adapters, optimizer and ZeRO buffers exist) and what the largest micro-batch's
// activations will add (estimated from the shapes), against the GPU's memory. The estimate follows what
// the explicit forward/backward keeps (model/decoder_layer.h LayerActivations: every layer's tensors, or
// only its input under gradient checkpointing plus one layer recomputed), the backward's transients of one
// layer (MLP gradients, flash attention's fp32 dq accumulator) and the loss chunk's fp32 logits; against the
// peaks measured on an H200 (docs/PERF.md) it came within 15% from 0.6B to 8B and 2k to 131k tokens.
// A tiled MLP keeps no [tokens, intermediate] tensor and makes them one chunk of rows at a time; activation
// offloading moves checkpointed layer inputs from the GPU to host memory (counted apart, host_bytes).
#pragma once

#include <cstdint>
#include <string>

#include "model/qwen3_config.h"

namespace qft::train {

struct ActivationShape {
  model::Qwen3Config config;       // the config one rank's layers compute with (tensor parallelism: local)
  int64_t tokens = 0;              // of the largest micro-batch (rows x padded length)
  int64_t tensor_parallel_size = 1;
  bool sequence_parallel = false;
  bool gradient_checkpointing = false;
  bool selective_recompute = false;  // every layer's activations but the cheap ones (decoder_layer.h)
  // With gradient_checkpointing: the layers checkpointed (the first ones; the others recompute selectively).
  // -1: all.
  int64_t recompute_num_layers = -1;
  bool checkpoint_residuals = false;  // a checkpointed layer keeps two [tokens, hidden] tensors, not one
  int64_t lora_r = 0;              // 0: no adapters
  int64_t activation_bytes = 2;    // of the compute dtype
  int64_t loss_chunk_tokens = 1024;
  bool tiled_mlp = false;            // model/ops/tiled_mlp.h
  int64_t tiled_mlp_num_shards = 0;  // 0: ceil(tokens / hidden_size)
  int64_t offloaded_layers = 0;      // with gradient_checkpointing: layers whose kept inputs are in host memory
};

// Estimated peak bytes of one micro-batch's activations and backward transients on the device.
int64_t estimate_activation_bytes(const ActivationShape& shape);

// Host bytes the offloaded layer inputs take (0 without offloading).
int64_t estimate_offloaded_bytes(const ActivationShape& shape);

struct MemoryPlan {
  int64_t state_bytes = 0;       // measured after loading
  int64_t activation_bytes = 0;  // estimated
  int64_t host_bytes = 0;        // estimated: offloaded layer inputs (activation offloading)
  int64_t host_ranks = 1;        // ranks sharing this node's memory, each with its own host_bytes
  int64_t host_total_bytes = 0;  // the node's physical memory; 0: unknown
  int64_t tokens = 0;
  int64_t device_total_bytes = 0;  // 0: not a GPU
  int64_t device_free_bytes = 0;
  int64_t total() const { return state_bytes + activation_bytes; }
};

// One line for the log: "memory per GPU: model state 16.3 GiB + activations ~20.2 GiB (4096 tokens) = ~36.5
// GiB of 139.8 GiB", and with offloading "; 24.0 GiB of layer inputs offloaded to host memory".
std::string describe(const MemoryPlan& plan);

// Whether the estimate says the run cannot fit even with the estimate's error in its favour (estimate x 0.85
// above the GPU's memory): then the trainer refuses before the first step.
bool clearly_too_large(const MemoryPlan& plan);

// Whether the offloaded layer inputs of the node's ranks need more page-locked memory than the node has
// (then the trainer refuses before pinning any: the kernel would kill the job part-way instead).
bool host_too_large(const MemoryPlan& plan);

}  // namespace qft::train
