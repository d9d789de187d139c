"""Prints docs/DISTRIBUTED.md's per-size tables: memory per GPU of the model state and traffic per optimizer
step for each ZeRO stage, from the Qwen3 shapes (src/hf/init_model.cpp presets). Activations are not included.
    python3 docs/tools/zero_memory_table.py
"""
PRESETS = {  # hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, tied
    "0.6B": (1024, 3072, 28, 16, 8, 128, 151936, True),
    "1.7B": (2048, 6144, 28, 16, 8, 128, 151936, True),
    "4B": (2560, 9728, 36, 32, 8, 128, 151936, True),
    "8B": (4096, 12288, 36, 32, 8, 128, 151936, False),
    "14B": (5120, 17408, 40, 40, 8, 128, 151936, False),
    "32B": (5120, 25600, 64, 64, 8, 128, 151936, False),
}
GiB = 1 << 30


def counts(h, i, layers, heads, kv, d, vocab, tied, r=16):
    """Parameters of one decoder layer, of what lies outside the layers (embed_tokens, lm_head, final norm),
    and LoRA's per layer."""
    q, kvs = heads * d, kv * d
    shapes = [(q, h), (kvs, h), (kvs, h), (h, q), (i, h), (i, h), (h, i)]
    layer = sum(o * n for o, n in shapes) + 2 * h + 2 * d
    resident = vocab * h * (1 if tied else 2) + h
    lora = sum(r * (o + n) for o, n in shapes)
    return layer, layers, resident, lora


def row(name, preset, full, n, stage):
    """What src/parallel/zero.h keeps per GPU: bf16 compute weights (ZeRO-3: the layers' shard plus two gather
    slots, embed_tokens/lm_head/norm whole); fp32 masters (sharded by ZeRO-3 in full fine-tuning, whole for
    LoRA: they are small); fp32 gradients (ZeRO-2/3: the own shard plus two layer slots plus the resident
    tensors' gradients whole); Adam m and v (sharded from stage 1)."""
    layer, layers, resident, lora = counts(*preset)
    base = layer * layers + resident
    trainable = base if full else lora * layers
    trainable_layer = layer if full else lora
    trainable_resident = resident if full else 0
    if stage == 3:
        weights = 2 * (layer * layers / n + 2 * layer + resident)
    else:
        weights = 2 * base
    masters = 4 * trainable / (n if stage == 3 and full else 1)
    if stage >= 2:
        grads = 4 * (trainable / n + 2 * trainable_layer + trainable_resident)
    else:
        grads = 4 * trainable
    adam = 8 * trainable / (n if stage >= 1 else 1)
    # Traffic a rank sends per step (ring algorithms): all-reduce 2(n-1)/n of the gradients; reduce-scatter
    # + all-gather the same (one accumulation step; stages 2/3 reduce-scatter every micro-batch); ZeRO-3 also
    # gathers the bf16 layers in forward and again in backward.
    traffic = 2 * (n - 1) / n * 4 * trainable + (2 * 2 * layer * layers * (n - 1) / n if stage == 3 else 0)
    return (f"| {name} | {stage} | {weights / GiB:.1f} | {(masters + grads + adam) / GiB:.2f} | "
            f"{(weights + masters + grads + adam) / GiB:.1f} | {traffic / GiB:.2f} |")


def main():
    n = 8
    for method in ("LoRA r16, all seven projections", "full fine-tuning"):
        print(f"\n{method}, {n} data-parallel ranks (GiB per GPU; traffic = GiB sent per rank per step)\n")
        print("| model | ZeRO | bf16 weights | trainable state | total | traffic |")
        print("|---|---|---|---|---|---|")
        for name, p in PRESETS.items():
            for stage in (0, 1, 2, 3):
                print(row(name, p, method.startswith("full"), n, stage))


if __name__ == "__main__":
    main()
