"""Timing the steady-state steps of a measured run: `bench scaling`'s trainers and plain loops
stamp the same window."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from scaletrain.errors import TrainingError


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class StepTimer:
    """The trainer's step_callback (and the plain loop's): times steps `warmup` + 1 to
    `warmup + steps`, in wall time, in this process's CPU time (all its threads) and, for a
    parameter-server worker, in its training thread's seconds on exchanges (`spent`).

    With `block` (--interleave), the window is cut into spans of `block` steps and `between`
    runs after each span but the last, outside the time counted (the plain loop's blocks)."""

    def __init__(
        self,
        warmup: int,
        steps: int,
        device: torch.device | None = None,
        spent: Callable[[], float] | None = None,
        block: int = 0,
        between: Callable[[], None] | None = None,
    ) -> None:
        self.first, self.last = warmup, warmup + steps
        self.device = device or torch.device("cpu")
        self.spent = spent
        self.block, self.between = block, between
        self.total = (0.0, 0.0, 0.0)  # wall, CPU, exchange seconds of the closed spans
        self.opened: tuple[float, float, float] | None = None  # the span being timed
        self.done = False

    def _stamp(self) -> tuple[float, float, float]:
        sync(self.device)  # what the GPU still has queued belongs to the steps before
        spent = self.spent() if self.spent is not None else 0.0
        return time.perf_counter(), time.process_time(), spent

    def __call__(self, step: int) -> None:
        if step < self.first or step > self.last:
            return
        edge = step in (self.first, self.last) or (
            self.block and (step - self.first) % self.block == 0
        )
        if not edge:
            return
        if self.opened is not None:
            (w0, c0, s0), (w1, c1, s1), (w, c, x) = self.opened, self._stamp(), self.total
            self.total = (w + w1 - w0, c + c1 - c0, x + s1 - s0)
            self.opened = None
        if step == self.last:
            self.done = True
            return
        if self.between is not None and step > self.first:
            self.between()
        self.opened = self._stamp()

    def record(self, samples_per_step: int) -> dict[str, float]:
        """Rates over the window. CPU time per step hardly depends on other jobs sharing the
        cores (wall time does), so it compares 1-process runs on a busy machine."""
        if not self.done:
            raise TrainingError(
                f"the run ended before step {self.last}: the timed window was not reached"
            )
        steps = self.last - self.first
        seconds, cpu, spent = self.total
        out = {
            "window_s": seconds,
            "samples_per_s": steps * samples_per_step / seconds,
            "ms_per_step": 1e3 * seconds / steps,
            "cpu_ms_per_step": 1e3 * cpu / steps,
        }
        if self.spent is not None:
            out["exchange_share"] = spent / seconds
        return out
