"""A progress bar over the steps of each epoch, with samples/s and the latest losses."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)


class StepProgress:
    """One bar per epoch; the epoch's validation metrics are printed under its bar."""

    def __init__(self, enabled: bool = True, samples_per_step: int = 1) -> None:
        self.enabled = enabled
        self.samples_per_step = samples_per_step
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._t0 = 0.0

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._t0 = time.perf_counter()
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            f"epoch {epoch + 1}/{epochs}", total=steps, rate="", losses=""
        )

    def advance(self, done: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=done)

    def update(self, done: int, metrics: dict[str, float]) -> None:
        if self._progress is None:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        losses = " ".join(f"{k.split('/')[-1]}={v:.3g}" for k, v in list(metrics.items())[:4])
        self._progress.update(
            self._task,
            completed=done,
            rate=f"{done * self.samples_per_step / elapsed:.1f} samples/s",
            losses=losses,
        )

    def end_epoch(self, metrics: dict[str, float]) -> None:
        self._stop()
        if self.enabled and metrics:
            text = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self.console.print(f"  {text}")
