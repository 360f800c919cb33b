"""Time the 3DGAN discriminator's convolutions in several formulations, forward and
forward + backward, on one GPU. Usage: PYTHONPATH=src python benchmarks/conv_variants.py OUT.json

Formulations: cuDNN bf16 channels-last-3d, cuDNN bf16 NCDHW, cuDNN fp32 (TF32), and the
FFT convolution of models/fft_conv.py (float32 cuFFT), eager and compiled, and the
depth-split convolution of models/zsplit_conv.py (bf16).
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from scaletrain.models.fft_conv import fft_conv3d
from scaletrain.models.zsplit_conv import zsplit_conv3d

# (name, in channels, out channels, padded input size, padding applied inside the conv)
LAYERS = [
    ("conv1 1->32", 1, 32, 25, 2),
    ("conv2 32->8", 32, 8, 29, 0),
    ("conv3 8->8", 8, 8, 29, 0),
    ("conv4 8->8", 8, 8, 27, 0),
]


def timed(fn, iters: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def bench_layer(batch: int, cin: int, cout: int, size: int, pad: int) -> dict:
    dev = torch.device("cuda")
    x32 = torch.randn(batch, cin, size, size, size, device=dev)
    w32 = torch.randn(cout, cin, 5, 5, 5, device=dev) * 0.05
    b32 = torch.zeros(cout, device=dev)
    out = {}

    def variant(name, x, w, b, conv):
        x = x.detach().requires_grad_(True)
        w = w.detach().requires_grad_(True)
        b = b.detach().requires_grad_(True)

        def fwd():
            with torch.no_grad():
                conv(x, w, b)

        def fwd_bwd():
            y = conv(x, w, b)
            y.backward(torch.ones_like(y))

        try:
            out[name] = {"fwd_ms": 1e3 * timed(fwd), "fwd_bwd_ms": 1e3 * timed(fwd_bwd)}
        except Exception as exc:  # a formulation that fails is reported, not fatal
            out[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, out[name], flush=True)

    def cudnn(x, w, b):
        return F.conv3d(x, w, b, padding=pad)

    def fft(x, w, b):
        return fft_conv3d(x, w, b, padding=pad)

    def zsplit(x, w, b):
        return zsplit_conv3d(x, w, b, padding=pad)

    bf = torch.bfloat16
    cl = torch.channels_last_3d
    variant("cudnn_bf16_cl", x32.to(bf).contiguous(memory_format=cl),
            w32.to(bf).contiguous(memory_format=cl), b32.to(bf), cudnn)  # fmt: skip
    variant("cudnn_bf16_ncdhw", x32.to(bf), w32.to(bf), b32.to(bf), cudnn)
    variant("zsplit_bf16_cl", x32.to(bf).contiguous(memory_format=cl), w32.to(bf), b32.to(bf),
            zsplit)  # fmt: skip
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    variant("cudnn_tf32", x32, w32, b32, cudnn)
    variant("fft_fp32", x32, w32, b32, fft)
    variant("fft_fp32_compiled", x32, w32, b32, torch.compile(fft, dynamic=False))
    with torch.no_grad():
        ref = F.conv3d(x32.double(), w32.double(), b32.double(), padding=pad)
        got = fft_conv3d(x32, w32, b32, padding=pad).double()
        out["fft_rel_err"] = float((got - ref).abs().max() / ref.abs().max())
    return out


def main() -> None:
    torch.backends.cudnn.benchmark = True
    batch = 256
    result = {"device": torch.cuda.get_device_name(), "batch": batch, "layers": {}}
    for name, cin, cout, size, pad in LAYERS:
        print("==", name, flush=True)
        result["layers"][name] = bench_layer(batch, cin, cout, size, pad)
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
