// The ops live one per file under model/ops/; they are compiled as this one translation unit because
// every libtorch translation unit costs tens of seconds to build and the ops are small.
#include "model/ops/attention.cpp"
#include "model/ops/attention_flash.cpp"
#include "model/ops/cross_entropy.cpp"
#include "model/ops/embedding.cpp"
#include "model/ops/fused_kernels.cpp"
#include "model/ops/linear.cpp"
#include "model/ops/lora_group.cpp"
#include "model/ops/qk_norm_rope.cpp"
#include "model/ops/rms_norm.cpp"
#include "model/ops/rope.cpp"
#include "model/ops/swiglu.cpp"
#include "model/ops/tiled_mlp.cpp"
