"""A 3-D convolution computed as a 2-D one: the depth taps stacked into the channels.

    y[b, o, z, :, :] = conv2d(x'[b, z], w'),   x'[b, z] = (x[b, :, z + dz] for dz < k)

x' holds k depth-shifted copies of the input side by side in the channels (k*C of them), w'
is the kernel with its depth folded into the input channels (O, k*C, k, k), and the batch of
2-D images is (batch * output depth). Exact in real arithmetic. The GEMM cuDNN runs is as
large as before, but its 2-D kernels are far better tuned for few channels than its 3-D ones:
on one H100, bf16, batch 256 (benchmarks/conv_passes.py) the 3DGAN discriminator's 1->32 layer
takes 3.7 ms for forward + input + weight gradient instead of 12.5, its 8->8 layers 8.0 and
6.2 instead of 12.7 and 10.0 (copies included). Its 32->8 layer gains nothing: there the
five-fold copy of a 32-channel input costs what the kernels save.

Works in channels-last order throughout: the input is read as (B, D, H, W, C), the copy is
built with one `torch.stack`, and its gradient (k shifted slices summed back) is a custom
backward, so autograd does not build k zero-filled full-size tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unfold_depth(x: torch.Tensor, k: int) -> torch.Tensor:
    """(B, D, H, W, C) -> (B, Do, H, W, k, C): k depth-shifted copies, Do = D - k + 1."""
    do = x.shape[1] - k + 1
    return torch.stack([x[:, dz : dz + do] for dz in range(k)], dim=4)


def fold_depth(grad: torch.Tensor, depth: int) -> torch.Tensor:
    """The gradient of unfold_depth: (B, Do, H, W, k, C) -> (B, depth, H, W, C), each of the k
    shifted slices summed back where it was read."""
    k, do = grad.shape[4], grad.shape[1]
    out = grad.new_zeros(grad.shape[0], depth, *grad.shape[2:4], grad.shape[5])
    for dz in range(k):
        out[:, dz : dz + do] += grad[:, :, :, :, dz]
    return out


class _DepthUnfold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, k: int) -> torch.Tensor:
        ctx.depth = x.shape[1]
        return unfold_depth(x, k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return fold_depth(grad, ctx.depth), None


def unfold_conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0
) -> torch.Tensor:
    """Same as F.conv3d(x, weight, bias, padding=padding) for stride 1, cubic kernels.

    The result is channels-last-3d in memory (B, O, Do, Ho, Wo)."""
    o, c, k = weight.shape[0], weight.shape[1], weight.shape[2]
    xl = x.permute(0, 2, 3, 4, 1)  # (B, D, H, W, C): a view when x is channels-last-3d
    if padding:
        xl = F.pad(xl, (0, 0) + (padding, padding) * 3)
    b, _, h, w, _ = xl.shape
    stacked = _DepthUnfold.apply(xl.contiguous(), k)  # (B, Do, H, W, k, C)
    do = stacked.shape[1]
    images = stacked.reshape(b * do, h, w, k * c).permute(0, 3, 1, 2)  # channels-last 2-D
    w2 = weight.permute(0, 2, 1, 3, 4).reshape(o, k * c, k, weight.shape[4])
    w2 = w2.contiguous(memory_format=torch.channels_last)
    y = F.conv2d(images, w2, bias)  # (B*Do, O, Ho, Wo)
    ho, wo = y.shape[2], y.shape[3]
    y = y.permute(0, 2, 3, 1).reshape(b, do, ho, wo, o)  # a view if cuDNN wrote channels-last
    return y.permute(0, 4, 1, 2, 3)
