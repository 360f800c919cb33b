"""Batch norm of a 3-D feature map with few channels, computed on its (voxels, channels) view.

PyTorch's batch-norm kernels for an NCDHW tensor reduce each channel in one thread block:
with the 3DGAN's 6-8 channels that is 6-8 blocks on a GPU of 132 multiprocessors, and the
profile of the uncompiled training step showed batch norm taking 37 % of it (statistics 12 %,
backward 25 %; benchmarks/results/h100_profile_step_1024_eager.txt). A channels-last tensor
is a (B*D*H*W, C) matrix in memory; batch norm of that matrix over its rows is the same
computation (same statistics, same running averages, same count for the unbiased variance),
and PyTorch runs it with kernels that spread the rows over the whole GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def batch_norm_flat(bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`bn(x)` for an nn.BatchNorm3d, through the (voxels, channels) view; the result is
    channels-last-3d. Any other module (SyncBatchNorm, say) is simply called."""
    if type(bn) is not nn.BatchNorm3d or x.dim() != 5:
        return bn(x)
    # _BatchNorm.forward's bookkeeping, unchanged
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep = not bn.training or bn.track_running_stats
    b, c, d, h, w = x.shape
    flat = x.contiguous(memory_format=torch.channels_last_3d).permute(0, 2, 3, 4, 1)
    y = F.batch_norm(
        flat.reshape(-1, c),
        bn.running_mean if keep else None,
        bn.running_var if keep else None,
        bn.weight, bn.bias, use_batch, factor, bn.eps,
    )  # fmt: skip
    return y.view(b, d, h, w, c).permute(0, 4, 1, 2, 3)
