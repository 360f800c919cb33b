"""The 3DGAN discriminator with a choice of convolution algorithm per layer, on its own
parameters.

`FastDiscriminator(d, convs)` runs `d`'s layers in order, but each `Conv3d` (with the zero
padding in front of it folded in) is computed by the algorithm named for it:

- "cudnn": `F.conv3d`, as `d` itself does;
- "zsplit": `zsplit_conv3d`, the depth taps split off into a 5x wider GEMM (exact);
- "fft": `fft_conv3d`, a float32 FFT convolution (exact to float32 rounding);
- "unfold2d": `unfold_conv3d`, the depth taps stacked into the channels of a 2-D
  convolution (exact), cuDNN's better-tuned 2-D kernels.

Batch norm, dropout and the heads are `d`'s own modules, so training-mode statistics, running
averages and the state dict are shared with `d`, and gradients reach `d`'s parameters. With
`channels_last`, batch norm runs on the feature map's (voxels, channels) view
(models/flat_batchnorm.py), which PyTorch's kernels spread over the whole GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from scaletrain.models.fft_conv import fft_conv3d
from scaletrain.models.flat_batchnorm import batch_norm_flat
from scaletrain.models.unfold_conv import unfold_conv3d
from scaletrain.models.zsplit_conv import zsplit_conv3d

ALGORITHMS = ("cudnn", "zsplit", "fft", "unfold2d")
# unfold2d copies its input k times: it pays where that copy is small (measured on an H100,
# benchmarks/conv_passes.py: 1 and 8 input channels gain 1.6-3.4x, 32 lose)
UNFOLD_MAX_IN_CHANNELS = 16


def auto_algorithms(discriminator: nn.Module) -> list[str]:
    """The fastest measured algorithm for each of the discriminator's convolutions."""
    return [
        "unfold2d" if m.in_channels <= UNFOLD_MAX_IN_CHANNELS else "cudnn"
        for m in discriminator.features
        if isinstance(m, nn.Conv3d)
    ]


def _symmetric_pad(pad: nn.ConstantPad3d) -> int | None:
    """The padding of a zero ConstantPad3d that is the same on every side, else None."""
    widths = set(pad.padding)
    if pad.value != 0.0 or len(widths) != 1:
        return None
    return widths.pop()


def _conv_padding(conv: nn.Conv3d) -> int:
    if conv.padding == "same":
        if any(k % 2 == 0 for k in conv.kernel_size):
            raise ValueError("'same' padding is supported for odd kernels only")
        return conv.kernel_size[0] // 2
    if isinstance(conv.padding, str):  # "valid"
        return 0
    if len(set(conv.padding)) != 1:
        raise ValueError(f"convolutions need equal padding on every axis, got {conv.padding}")
    return conv.padding[0]


def _check(conv: nn.Conv3d) -> None:
    if conv.stride != (1, 1, 1) or conv.dilation != (1, 1, 1) or conv.groups != 1:
        raise ValueError("only stride 1, dilation 1 and groups 1 are supported")
    if len(set(conv.kernel_size)) != 1:
        raise ValueError("only cubic kernels are supported")


class FastDiscriminator(nn.Module):
    """(B, 1, 25, 25, 25) -> (logit, energy) like `Discriminator`, with chosen conv algorithms.

    `convs`: one algorithm for every convolution, one per convolution in order, or "auto"
    (`auto_algorithms`).
    `channels_last`: keep cuDNN's inputs channels-last-3d (its fastest layout in bf16).
    """

    def __init__(
        self,
        discriminator: nn.Module,
        convs: str | Sequence[str] = "zsplit",
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        self.d = discriminator
        self.channels_last = channels_last
        n_convs = sum(isinstance(m, nn.Conv3d) for m in discriminator.features)
        if convs == "auto":
            convs = auto_algorithms(discriminator)
        algos = [convs] * n_convs if isinstance(convs, str) else list(convs)
        if len(algos) != n_convs or any(a not in ALGORITHMS for a in algos):
            raise ValueError(
                f"convs must name one of {ALGORITHMS} for all {n_convs} convolutions, got {convs}"
            )
        # (module, algorithm or "" for other layers, zero padding folded into a convolution)
        self.plan: list[tuple[nn.Module, str, int]] = []
        pending = 0
        for module in discriminator.features:
            if isinstance(module, nn.ConstantPad3d):
                width = _symmetric_pad(module)
                if width is not None:
                    pending += width
                    continue
            if isinstance(module, nn.Conv3d):
                _check(module)
                self.plan.append((module, algos.pop(0), pending + _conv_padding(module)))
                pending = 0
                continue
            if pending:
                raise ValueError("zero padding must be followed by a convolution")
            self.plan.append((module, "", 0))

    def _conv(self, h: torch.Tensor, conv: nn.Conv3d, algo: str, pad: int) -> torch.Tensor:
        if algo == "fft":
            # cuFFT works in float32: leave autocast for this layer
            with torch.autocast(h.device.type, enabled=False):
                return fft_conv3d(h.float(), conv.weight, conv.bias, padding=pad)
        if self.channels_last:
            h = h.contiguous(memory_format=torch.channels_last_3d)
        if algo == "zsplit":
            return zsplit_conv3d(h, conv.weight, conv.bias, padding=pad)
        if algo == "unfold2d":
            return unfold_conv3d(h, conv.weight, conv.bias, padding=pad)
        return F.conv3d(h, conv.weight, conv.bias, padding=pad)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = image
        for module, algo, pad in self.plan:
            if algo:
                h = self._conv(h, module, algo, pad)
            else:
                h = batch_norm_flat(module, h) if self.channels_last else module(h)
        return self.d.real_fake(h).squeeze(1), self.d.energy(h).squeeze(1)
