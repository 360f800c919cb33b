"""Time each pass (forward, input gradient, weight gradient) of the 3DGAN discriminator's
convolutions separately, for cuDNN 3-D and for re-expressions that hand cuDNN a different
problem. Usage: PYTHONPATH=src python benchmarks/conv_passes.py [batch] [OUT.json]

Formulations (all exact in real arithmetic):
- cudnn3d_bf16_cl: F.conv3d, bf16, channels-last-3d (what the fast step runs);
- cudnn3d_tf32: F.conv3d, float32 NCDHW with TF32;
- unfold2d_bf16: the k depth taps stacked into the channels (k*C inputs), then a 2-D k x k
  convolution over (batch * depth) images; the input gradient sums k shifted slices back
  (models/unfold_conv.py);
- im2col_bf16 (one input channel only): the k^3 taps as a (voxels, k^3) matrix and one GEMM.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import torch.nn.functional as F

from scaletrain.models.unfold_conv import fold_depth, unfold_depth

# (name, in channels, out channels, padded input size): valid 5^3 convolutions
LAYERS = [
    ("conv1 1->32", 1, 32, 29),
    ("conv2 32->8", 32, 8, 29),
    ("conv3 8->8", 8, 8, 29),
    ("conv4 8->8", 8, 8, 27),
]
K = 5
BACKWARD = torch.ops.aten.convolution_backward


DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a shape check
SYNC = torch.cuda.synchronize if DEV.type == "cuda" else (lambda: None)


def timed(fn, iters: int = 10, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    SYNC()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    SYNC()
    return 1e3 * (time.perf_counter() - t) / iters


def conv_passes(x, w, dims: int) -> dict[str, float]:
    """fwd, dgrad and wgrad of a valid stride-1 convolution through aten's own kernels."""
    conv = F.conv3d if dims == 3 else F.conv2d
    y = conv(x, w)
    g = torch.randn_like(y)
    one, zero = [1] * dims, [0] * dims

    def back(mask):
        return lambda: BACKWARD(g, x, w, None, one, zero, one, False, zero, 1, mask)

    return {
        "fwd": timed(lambda: conv(x, w)),
        "dgrad": timed(back([True, False, False])),
        "wgrad": timed(back([False, True, False])),
    }


def images_2d(x_cl: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) channels-last-3d -> (B*Do, K*C, H, W) channels-last 2-D images."""
    _, c, _, h, w = x_cl.shape
    stacked = unfold_depth(x_cl.permute(0, 2, 3, 4, 1), K)  # (B, Do, H, W, K, C)
    return stacked.reshape(-1, h, w, K * c).permute(0, 3, 1, 2)


def bench_layer(batch: int, cin: int, cout: int, size: int) -> dict:
    dev = DEV
    bf, cl = torch.bfloat16, torch.channels_last_3d
    x32 = torch.randn(batch, cin, size, size, size, device=dev)
    w32 = torch.randn(cout, cin, K, K, K, device=dev) * 0.05
    out: dict[str, dict] = {}
    xb = x32.to(bf).contiguous(memory_format=cl)
    wb = w32.to(bf).contiguous(memory_format=cl)
    out["cudnn3d_bf16_cl"] = conv_passes(xb, wb, 3)
    out["cudnn3d_tf32"] = conv_passes(x32, w32, 3)

    # depth taps into channels: the 2-D problem, plus the cost of building / folding
    w2 = (
        wb.permute(0, 2, 1, 3, 4)
        .reshape(cout, K * cin, K, K)
        .contiguous(memory_format=torch.channels_last)
    )
    x2 = images_2d(xb)
    r = conv_passes(x2, w2, 2)
    r["unfold"] = timed(lambda: images_2d(xb))
    g = torch.randn(batch, size - K + 1, size, size, K, cin, device=dev, dtype=bf)
    r["fold"] = timed(lambda: fold_depth(g, size))
    out["unfold2d_bf16"] = r
    with torch.no_grad():  # the formulation is exact: compare with float64
        ref = F.conv3d(x32.double(), w32.double())
        got = F.conv2d(x2, w2).float().reshape(batch, size - K + 1, cout, *ref.shape[3:])
        got = got.transpose(1, 2).double()
        out["unfold2d_bf16"]["rel_err"] = float((got - ref).abs().max() / ref.abs().max())

    if cin == 1:
        do = size - K + 1
        xv = xb.reshape(batch, size, size, size)
        cols = xv.unfold(1, K, 1).unfold(2, K, 1).unfold(3, K, 1).reshape(-1, K**3)
        wm = wb.reshape(cout, K**3).t().contiguous()
        gy = torch.randn(cols.shape[0], cout, device=dev, dtype=bf)
        out["im2col_bf16"] = {
            "unfold": timed(
                lambda: xv.unfold(1, K, 1).unfold(2, K, 1).unfold(3, K, 1).reshape(-1, K**3)
            ),
            "fwd": timed(lambda: cols @ wm),
            "wgrad": timed(lambda: cols.t() @ gy),
            "dgrad_cols": timed(lambda: gy @ wm.t()),
            "voxels": batch * do**3,
        }
    for name, v in out.items():
        print(f"{name:18s}", {k: round(x, 3) if isinstance(x, float) else x for k, x in v.items()})
    return out


def main() -> None:
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    args = sys.argv[1:]
    batch = int(args[0]) if args else 256
    name = torch.cuda.get_device_name() if DEV.type == "cuda" else "cpu"
    result = {"device": name, "batch": batch, "layers": {}}
    for name, cin, cout, size in LAYERS:
        print("==", name, flush=True)
        result["layers"][name] = bench_layer(batch, cin, cout, size)
    if len(args) > 1:
        with open(args[1], "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
