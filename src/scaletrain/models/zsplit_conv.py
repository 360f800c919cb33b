"""A 3-D convolution with few output channels, re-expressed so that the GEMM is wider.

cuDNN computes a convolution as an implicit GEMM with N = output channels. The 3DGAN
discriminator's layers have 8 outputs, and the tensor-core tiles are 32-256 wide, so most of
each tile multiplies zeros. Splitting the depth taps off makes N k times wider without
changing the FLOPs:

    y[o, z] = sum_dz u[(o, dz), z + dz],   u = conv3d(x, w as (O*k, C, 1, k, k))

u is a convolution over (y, x) only, with O*k output channels (40 for O = 8, k = 5); the
depth taps are then summed over k shifted slices, a cheap memory-bound step. The input
gradient is the same kind of convolution (full correlation with the flipped, transposed
kernel), so it is computed the same way; the weight gradient stays cuDNN's own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _zsplit(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation of x (B, C, D, H, W) with weight (O, C, k, k, k)."""
    o, c, k = weight.shape[0], weight.shape[1], weight.shape[2]
    w2 = weight.permute(0, 2, 1, 3, 4).reshape(o * k, c, 1, k, weight.shape[4])
    if x.is_contiguous(memory_format=torch.channels_last_3d):
        w2 = w2.contiguous(memory_format=torch.channels_last_3d)
    u = F.conv3d(x, w2)  # (B, O*k, D, H', W')
    depth = x.shape[2] - k + 1
    u = u.unflatten(1, (o, k))
    y = u[:, :, 0, 0:depth]
    for dz in range(1, k):
        y = y + u[:, :, dz, dz : dz + depth]
    return y


class _ZSplitConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return _zsplit(x, weight)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grad_x = grad_w = None
        k = weight.shape[2]
        if ctx.needs_input_grad[0]:
            # d/dx of a valid correlation: full correlation with the flipped, transposed kernel
            flipped = weight.flip(2, 3, 4).transpose(0, 1)
            grad_x = _zsplit(F.pad(grad, (k - 1,) * 6), flipped)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad, x, weight, None, [1, 1, 1], [0, 0, 0], [1, 1, 1], False, [0, 0, 0], 1,
                [False, True, False],
            )[1]  # fmt: skip
        return grad_x, grad_w


def zsplit_conv3d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, padding: int = 0
) -> torch.Tensor:
    """`F.conv3d(x, weight, bias, padding=padding)` for cubic kernels, stride 1, groups 1.

    Under autocast the convolution runs in the autocast dtype, as F.conv3d would; the
    backward then stays in that dtype too (autocast does not reach into a backward).
    """
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    x, weight = x.to(dtype), weight.to(dtype)
    if padding:
        x = F.pad(x, (padding,) * 6)
    with torch.autocast(device, enabled=False):
        y = _ZSplitConv.apply(x, weight)
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1, 1)
    return y
