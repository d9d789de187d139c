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
    q, kvs = heads * d, kv * d
    shapes = [(q, h), (kvs, h), (kvs, h), (h, q), (i, h), (i, h), (h, i)]
    linear = sum(o * n for o, n in shapes) * layers
    norms = (2 * h + 2 * d) * layers + h
    embed = vocab * h * (1 if tied else 2)
    lora = sum(r * (o + n) for o, n in shapes) * layers
    return linear + norms + embed, lora


def row(name, base, trainable, n, stage):
    # bf16 base weights (2 B); trainable fp32 master (4) + grad (4) + Adam m, v (8).
    weights = 2 * base / (n if stage == 3 else 1)
    masters = 4 * trainable
    grads = 4 * trainable / (n if stage >= 2 else 1)
    adam = 8 * trainable / (n if stage >= 1 else 1)
    # Traffic a rank sends per step (ring algorithms): all-reduce 2(n-1)/n of the gradients; reduce-scatter
    # + all-gather the same; ZeRO-3 also all-gathers the bf16 weights in forward and again in backward.
    traffic = 2 * (n - 1) / n * 4 * trainable + (2 * 2 * base * (n - 1) / n if stage == 3 else 0)
    return (f"| {name} | {stage} | {weights / GiB:.1f} | {(masters + grads + adam) / GiB:.2f} | "
            f"{(weights + masters + grads + adam) / GiB:.1f} | {traffic / GiB:.2f} |")


def main():
    n = 8
    for method in ("LoRA r16, all seven projections", "full fine-tuning"):
        print(f"\n{method}, {n} data-parallel ranks (GiB per GPU; traffic = GiB sent per rank per step)\n")
        print("| model | ZeRO | bf16 weights | trainable state | total | traffic |")
        print("|---|---|---|---|---|---|")
        for name, p in PRESETS.items():
            base, lora = counts(*p)
            trainable = lora if method.startswith("LoRA") else base
            for stage in (0, 1, 2, 3):
                print(row(name, base, trainable, n, stage))


if __name__ == "__main__":
    main()
