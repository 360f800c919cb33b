"""Where a model is cut into pipeline stages: its forward as a chain of layers, what each
layer costs, and the contiguous cuts that balance the stages.

The cuts go where the measured cost balances best: forward FLOPs per sample of every
layer (torch.utils.flop_counter on meta tensors) plus one operation per output element for
the element-wise layers.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from scaletrain.errors import ConfigError, LayoutError

# ---------------------------------------------------------------------------- the chain


def chain_of(name: str, model: nn.Module) -> list[nn.Module]:
    """The model's forward as a list of layers: `pipeline_layers()`, or an nn.Sequential."""
    layers_fn = getattr(model, "pipeline_layers", None)
    if callable(layers_fn):
        layers = list(layers_fn())
    elif isinstance(model, nn.Sequential):
        layers = list(model)
    else:
        raise ConfigError(
            f"parallel.mode pipeline: model {name!r} ({type(model).__name__}) cannot be cut into "
            "stages; make it an nn.Sequential or give it a pipeline_layers() method "
            "(see models/chain.py)"
        )
    if not layers or not all(isinstance(layer, nn.Module) for layer in layers):
        raise ConfigError(f"parallel.mode pipeline: {name!r}.pipeline_layers() must list modules")
    return layers


# ---------------------------------------------------------------------------- costs and cuts


@dataclass(frozen=True)
class LayerCost:
    """What one layer costs per sample: FLOPs of matmuls and convolutions, output elements
    (the element-wise work: activations, normalization, padding), parameters."""

    kind: str
    flops: int
    elements: int
    params: int

    @property
    def cost(self) -> int:
        return self.flops + self.elements


def _leaves(value: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]


def _kind(layer: nn.Module) -> str:
    inner = getattr(layer, "module", None)
    return type(inner if isinstance(inner, nn.Module) else layer).__name__


def measure_layers(layers: list[nn.Module], example: torch.Tensor) -> list[LayerCost]:
    """Per-sample cost of each layer, measured on meta tensors (no memory, no arithmetic); a
    layer that meta tensors cannot run falls back to real CPU tensors. Copies are measured, in
    eval mode, so the model's batch-norm statistics stay untouched."""
    from torch.utils.flop_counter import FlopCounterMode

    params = [sum(p.numel() for p in layer.parameters()) for layer in layers]
    kinds = [_kind(layer) for layer in layers]
    for device in ("meta", "cpu"):
        copies = [m.to(device).eval() for m in copy.deepcopy(layers)]
        x: Any = example[:1].to(device)
        costs = []
        try:
            with torch.no_grad():
                for layer, kind, n in zip(copies, kinds, params, strict=True):
                    with FlopCounterMode(display=False) as counter:
                        x = layer(x)
                    elements = sum(t.numel() for t in _leaves(x))
                    costs.append(LayerCost(kind, int(counter.get_total_flops()), elements, n))
            return costs
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as exc:
            if device == "cpu":
                raise ConfigError(
                    f"parallel.mode pipeline: cannot run the layers on example_input() to "
                    f"measure them ({str(exc).splitlines()[0][:160]})"
                ) from None
    raise AssertionError("unreachable")


def balanced_bounds(costs: list[int], stages: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) ranges of layers, one per stage, minimizing the largest stage
    cost (dynamic programming over the cut points; exact for integer costs)."""
    n = len(costs)
    prefix = np.concatenate([[0], np.cumsum(np.asarray(costs, dtype=np.int64))]).tolist()
    inf = float("inf")
    # best[k][i]: smallest largest-stage cost of the first i layers in k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0
    for k in range(1, stages + 1):
        for i in range(k, n - (stages - k) + 1):
            for j in range(k - 1, i):
                value = max(best[k - 1][j], prefix[i] - prefix[j])
                if value < best[k][i]:
                    best[k][i], cut[k][i] = value, j
    bounds, stop = [], n
    for k in range(stages, 0, -1):
        start = cut[k][stop]
        bounds.append((start, stop))
        stop = start
    return bounds[::-1]


def even_bounds(n: int, stages: int) -> list[tuple[int, int]]:
    """The same number of layers per stage (to compare with the balanced split)."""
    edges = [round(n * s / stages) for s in range(stages + 1)]
    return list(itertools.pairwise(edges))


@dataclass(frozen=True)
class StagePlan:
    """Where one model is cut: layer ranges per stage and what each layer costs."""

    model: str
    bounds: tuple[tuple[int, int], ...]
    layers: tuple[LayerCost, ...]
    split: str  # "flops" or "layers"

    @property
    def stages(self) -> int:
        return len(self.bounds)

    def stage_cost(self, s: int) -> int:
        start, stop = self.bounds[s]
        return sum(c.cost for c in self.layers[start:stop])

    @property
    def imbalance(self) -> float:
        """Largest stage cost over the mean: 1.0 is perfect, S means one stage does it all."""
        costs = [self.stage_cost(s) for s in range(self.stages)]
        return max(costs) / max(sum(costs) / len(costs), 1e-9)

    def table(self) -> str:
        total = max(sum(c.cost for c in self.layers), 1)
        head = (
            f"pipeline: {self.model} in {self.stages} stages, cut by {self.split} "
            f"(largest stage {self.imbalance:.2f}x the mean)"
        )
        lines = [head, f"{'stage':>6} {'layers':>8}  {'from':<14} {'to':<14} "
                       f"{'params':>9} {'FLOP/sample':>11} {'share':>6}"]  # fmt: skip
        for s, (start, stop) in enumerate(self.bounds):
            part = self.layers[start:stop]
            lines.append(
                f"{s:>6} {f'{start}-{stop - 1}':>8}  {part[0].kind:<14} {part[-1].kind:<14} "
                f"{sum(c.params for c in part):>9} {_si(sum(c.flops for c in part)):>11} "
                f"{self.stage_cost(s) / total:>6.1%}"
            )
        return "\n".join(lines)

    def describe(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "bounds": [list(b) for b in self.bounds],
            "stage_mflop_per_sample": [
                round(sum(c.flops for c in self.layers[a:b]) / 1e6, 3) for a, b in self.bounds
            ],
            "stage_params": [sum(c.params for c in self.layers[a:b]) for a, b in self.bounds],
            "imbalance": round(self.imbalance, 3),
        }


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def plan_stages(
    name: str, model: nn.Module, layers: list[nn.Module], stages: int, split: str = "flops"
) -> StagePlan:
    """Cut `layers` into `stages` contiguous stages (LayoutError when there are too few)."""
    if stages > len(layers):
        raise LayoutError(
            f"parallel.mode pipeline: model {name!r} has {len(layers)} layers, too few for "
            f"{stages} stages (one per process); use at most {len(layers)} processes"
        )
    example_fn = getattr(model, "example_input", None)
    if callable(example_fn):
        costs = measure_layers(layers, example_fn(1))
    else:  # nothing to run the layers on: the parameter count stands in for the cost
        sizes = [sum(p.numel() for p in m.parameters()) for m in layers]
        costs = [LayerCost(_kind(m), 0, n, n) for m, n in zip(layers, sizes, strict=True)]
        split = f"{split} (parameters; no example_input())" if split == "flops" else split
    if split.startswith("flops"):
        bounds = balanced_bounds([c.cost for c in costs], stages)
    else:
        bounds = even_bounds(len(layers), stages)
    return StagePlan(name, tuple(bounds), tuple(costs), split)
