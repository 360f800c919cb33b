"""Models as chains of layers: what pipeline parallelism (parallel/pipeline.py) cuts into stages.

A model that can be split defines `pipeline_layers()`: modules whose composition is its
forward, `model(x) == layers[-1](...layers[1](layers[0](x)))`, each passing one tensor or a
tuple of tensors to the next; and `example_input(batch)`, an input of the right shape, from
which the cost of every layer is measured. The layers are the model's own submodules (or
small wrappers around them), so a stage trains the model's parameters themselves.
"""

from __future__ import annotations

import torch
from torch import nn


class View(nn.Module):
    """Reshape to (batch, *shape)."""

    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(-1, *self.shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class OnFirst(nn.Module):
    """Apply `module` to the first of a tuple and carry the rest along unchanged."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, xs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.module(xs[0]), *xs[1:])


class Heads(nn.Module):
    """Several output layers on one feature vector: a tuple, or a dict when `names` are given.

    `squeeze[i]` drops the trailing size-1 dimension of head i (a scalar per sample).
    """

    def __init__(
        self, heads: list[nn.Module], squeeze: list[bool], names: list[str] | None = None
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.squeeze = list(squeeze)
        self.names = names

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, ...] | dict[str, torch.Tensor]:
        outs = [
            head(h).squeeze(1) if sq else head(h)
            for head, sq in zip(self.heads, self.squeeze, strict=True)
        ]
        if self.names is None:
            return tuple(outs)
        return dict(zip(self.names, outs, strict=True))


def chain_forward(layers: list[nn.Module], x: torch.Tensor):
    """Run the chain in one process (tests compare it with the model's own forward)."""
    for layer in layers:
        x = layer(x)
    return x
