"""3-D convolution through the FFT: the same valid cross-correlation as `F.conv3d`, computed
as a product in the frequency domain.

Why: the 3DGAN discriminator's 5x5x5 convolutions have 8 output channels. As implicit GEMMs
they give the tensor cores an N of 8, which they cannot fill, and the 32->8 layer alone is a
gigaFLOP per shower. In the frequency domain the kernel size no longer matters: one FFT per
input channel, a channel contraction per frequency, one inverse FFT per output channel. The
arithmetic runs in float32 (cuFFT), so it is at least as exact as the bf16 convolution it
replaces. Autograd differentiates through `rfftn`/`irfftn`, so no backward is written here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DIMS = (-3, -2, -1)


def fft_size(length: int) -> int:
    """The transform length for an input of `length` cells: the next size with small prime
    factors (cuFFT is fastest on 2, 3, 5 and 7) that avoids wrap-around of valid outputs."""
    n = length
    while True:
        m = n
        for p in (2, 3, 5, 7):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def fft_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | tuple[int, int, int] = 0,
) -> torch.Tensor:
    """`F.conv3d(x, weight, bias, padding=padding)` (stride 1, no dilation, groups 1) by FFT.

    x (B, C, D, H, W), weight (O, C, kd, kh, kw). Circular cross-correlation of length n
    equals the linear one for every valid output as long as n >= the padded input length:
    output z reads inputs z .. z + k - 1, none of which wraps.
    """
    pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
    dtype = x.dtype
    x = x.float()
    if any(pad):
        x = F.pad(x, (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]))
    size = x.shape[-3:]
    kernel = weight.shape[-3:]
    out = [s - k + 1 for s, k in zip(size, kernel, strict=True)]
    n = [fft_size(s) for s in size]
    xf = torch.fft.rfftn(x, s=n, dim=DIMS)  # (B, C, n0, n1, n2 // 2 + 1)
    wf = torch.fft.rfftn(weight.float(), s=n, dim=DIMS)  # (O, C, ...)
    # correlation, not convolution: the kernel's transform enters conjugated
    yf = _contract(xf, wf.conj())
    y = torch.fft.irfftn(yf, s=n, dim=DIMS)[..., : out[0], : out[1], : out[2]]
    if bias is not None:
        y = y + bias.float().view(1, -1, 1, 1, 1)
    return y.to(dtype)


def _contract(xf: torch.Tensor, wf: torch.Tensor) -> torch.Tensor:
    """sum_c xf[b, c, f] * wf[o, c, f] -> (B, O, f): one small complex GEMM per frequency."""
    b, c = xf.shape[:2]
    o = wf.shape[0]
    spatial = xf.shape[2:]
    # frequency-major batches of (B x C) @ (C x O): cuBLAS' batched complex GEMM
    xm = xf.reshape(b, c, -1).permute(2, 0, 1)
    wm = wf.reshape(o, c, -1).permute(2, 1, 0)
    return torch.bmm(xm, wm).permute(1, 2, 0).reshape(b, o, *spatial)
