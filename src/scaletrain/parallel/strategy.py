"""The seam between the trainer and distribution: what happens between backward and step.

`Strategy` itself is the single-process case: every hook does nothing. Distributed modes
subclass it; the trainer calls the same hooks in every mode and never branches on the mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class Strategy:
    """Single process, no communication."""

    name = "none"
    rank = 0
    world_size = 1
    # a parameter server: `train()` runs `serve` on this rank instead of the training loop
    serves = False
    # each model is split over the processes (pipeline): every rank runs every model call,
    # validation included, and takes part in gathering the state for a checkpoint
    model_parallel = False
    # this process's index among those that train one replica (a checkpoint's `ranks`)
    group_rank = 0
    # a checkpoint (written by another process) holds nothing of this one's own training
    # state: it keeps its optimizers', random streams' and own (state_dict) states in a file
    keeps_own_state = False

    @property
    def is_main(self) -> bool:
        """Whether this process logs, validates and writes checkpoints."""
        return self.rank == 0

    @property
    def data_rank(self) -> tuple[int, int]:
        """(shard index, number of shards) of the training data this process reads."""
        return self.rank, self.world_size

    def device(self, requested: str) -> torch.device:
        if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
            return torch.device(
                "cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0
            )
        return torch.device("cpu")

    def place_models(
        self, models: dict[str, nn.Module], device: torch.device
    ) -> dict[str, nn.Module]:
        """The models this process trains, on its device (the task is built from these)."""
        return {name: model.to(device) for name, model in models.items()}

    def state_dicts(
        self, models: dict[str, nn.Module], optimizers: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Model and optimizer state dicts as one unsplit process holds them (a checkpoint's).
        With `model_parallel` every rank calls this and the main rank gets the whole state."""
        return (
            {name: model.state_dict() for name, model in models.items()},
            {name: optimizer.state_dict() for name, optimizer in optimizers.items()},
        )

    def load_state_dicts(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        model_states: dict[str, Any],
        optimizer_states: dict[str, Any],
    ) -> None:
        """Load a checkpoint's states (those of one unsplit process) into this process's."""
        for name, state in model_states.items():
            models[name].load_state_dict(state)
        for name, state in optimizer_states.items():
            if name in optimizers:
                optimizers[name].load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the strategy itself (a parameter server's rule state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's `state_dict`, before `setup`."""

    def setup(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, Any],
        *,
        steps_per_epoch: int = 0,
        step: int = 0,
    ) -> None:
        """Called once after the task is built (and after a resume has loaded its state).

        `steps_per_epoch` sizes schedules such as learning-rate warm-up; `step` is the step
        training starts from (non-zero after a resume).
        """

    def after_backward(self, name: str, module: nn.Module) -> None:
        """Gradients of `module` are ready; its optimizer steps right after this returns."""

    def end_step(self, step: int) -> None:
        """One full training step (all of the task's updates) is done."""

    def agree_stop(self, requested: bool) -> bool:
        """Whether to stop after this step, asked for by this process (`requested`) or by
        another of its group; the same answer at the same step for all of them. Collective
        where there is a group: every process calls it after every step, or none does."""
        return requested

    def agree_finite(self, finite: bool) -> bool:
        """Whether this update's loss is finite on every process that trains this replica, so
        that all of them skip it together (train.on_nonfinite: skip, lower_lr). Collective
        where there is a group, as agree_stop."""
        return finite

    def reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average per-process metrics over the processes that train one model."""
        return metrics

    def gather(self, obj: Any) -> list[Any] | None:
        """`obj` of every process that trains one replica, by `group_rank`, at the one that
        writes checkpoints (None at the others). Collective: all of them call it."""
        return [obj]

    def serve(
        self,
        steps_per_epoch: int,
        epochs: int,
        start_step: int,
        stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, int, dict[str, float] | None]]:
        """A server's loop: yields (epoch, step, metrics) whenever the central model it holds
        has completed an epoch, so that the trainer validates and checkpoints it; metrics
        None: its workers stopped early at `step` (a signal; `stop()` true: one here), to be
        saved for a resume."""
        return iter(())

    def describe(self) -> dict[str, Any]:
        return {"mode": self.name, "rank": self.rank, "world_size": self.world_size}

    def close(self) -> None:
        pass
