"""Quantize random bf16 tensors with bitsandbytes (NF4, blocksize 64, with and without double
quantization) and write each case as raw little-endian sections for `nf4_check DIR`:
n (int64), input bf16[n], packed u8[(n+1)//2], absmax codes u8[nb], absmax2 f32[ceil(nb/256)], offset f32,
code2 f32[256], dequantized bf16[n], plain packed u8[(n+1)//2], plain absmax f32[nb], plain dequantized bf16[n].

usage: python3 nf4_bnb_dump.py OUT_DIR   (needs a CUDA GPU and the bitsandbytes wheel)
"""
import os
import sys

import bitsandbytes
import bitsandbytes.functional as F
import torch


def special_tensor(gen):
    """Blocks that exercise the edges: all zeros, constants of either sign, one outlier, tiny values."""
    t = torch.randn(64 * 300, generator=gen) * 0.02
    t[0:64] = 0.0
    t[64:128] = 0.5
    t[128:192] = -0.5
    t[200] = 100.0
    t[256:320] = torch.randn(64, generator=gen) * 1e-30
    t[320:384] = -torch.rand(64, generator=gen)  # all negative: absmax from a negative value
    return t


def write_case(path, a):
    a = a.to(torch.bfloat16).cuda().contiguous()
    n = a.numel()
    q, st = F.quantize_4bit(a, blocksize=64, compress_statistics=True, quant_type="nf4")
    deq = F.dequantize_4bit(q, st)
    qp, stp = F.quantize_4bit(a, blocksize=64, compress_statistics=False, quant_type="nf4")
    deqp = F.dequantize_4bit(qp, stp)
    assert st.absmax.dtype == torch.uint8 and stp.absmax.dtype == torch.float32
    sections = [
        torch.tensor([n], dtype=torch.int64),
        a.reshape(-1).view(torch.int16),
        q.reshape(-1),
        st.absmax.reshape(-1),
        st.state2.absmax.reshape(-1).float(),
        st.offset.reshape(-1).float(),
        st.state2.code.reshape(-1).float(),
        deq.reshape(-1).view(torch.int16),
        qp.reshape(-1),
        stp.absmax.reshape(-1),
        deqp.reshape(-1).view(torch.int16),
    ]
    with open(path, "wb") as f:
        for s in sections:
            f.write(s.detach().cpu().contiguous().numpy().tobytes())
    print(f"{os.path.basename(path)}: n={n} shape={tuple(a.shape)} offset={st.offset.item():.9g}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    print(f"bitsandbytes {bitsandbytes.__version__}, torch {torch.__version__}")
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))  # fresh inputs every run
    cases = [
        torch.randn(320, 256, generator=gen) * 0.02,
        torch.randn(1000003, generator=gen) * 0.02,  # odd count: the last byte's low nibble is padding
        torch.randn(333, 77, generator=gen),
        torch.randn(4096, 4096, generator=gen) * 0.02,
        torch.randn(1024, 3000, generator=gen) * torch.rand(1024, 1, generator=gen) * 3,  # rows of different scale
        special_tensor(gen),
    ]
    for i, t in enumerate(cases):
        write_case(os.path.join(out, f"case_{i}.bin"), t)


if __name__ == "__main__":
    main()
