"""One trial: its config, one fold's training, and the K folds summarized as mean ± std.

A `TrialTask` is what the coordinator hands to a group (a small picklable message); each
fold trains on its own K-fold split of the data and returns a `FoldResult`; `summarize`
turns the fold results into what the sampler sees (the mean) and what the user attributes
keep (per-fold values, std, errors).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scaletrain.config import Config, from_dict
from scaletrain.errors import ConfigError, ScaletrainError
from scaletrain.hpo.space import with_params

# report(epochs_done, value) -> True when the trial should stop (pruned)
Reporter = Callable[[int, float], bool]


class TrialTimeout(ScaletrainError):
    """The trial ran past search.trial_timeout."""


class TrialPruned(ScaletrainError):
    """The pruner stopped the trial on its intermediate values."""


@dataclass
class TrialTask:
    number: int
    params: dict[str, Any]
    raw: dict[str, Any]  # the study's base config (YAML + overrides) as a plain dict
    run_dir: str  # the study's run directory; trials go to run_dir/trials/NNNN
    folds: int = 1
    objective: str = "val/loss"
    trial_timeout: float | None = None
    prune: bool = False


@dataclass
class FoldResult:
    fold: int
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    fatal: bool = False  # a configuration error: every trial would fail the same way
    pruned: bool = False
    seconds: float = 0.0


@dataclass
class Outcome:
    state: str  # "complete", "pruned" or "fail"
    value: float | None
    std: float | None
    fold_values: list[float | None]
    error: str | None = None
    fatal: bool = False
    seconds: float = 0.0


def trial_dir(run_dir: str | Path, number: int, fold: int, folds: int) -> Path:
    base = Path(run_dir) / "trials" / f"{number:04d}"
    return base / f"fold{fold}" if folds > 1 else base


def trial_config(task: TrialTask, fold: int) -> Config:
    """The config a fold of this trial trains with."""
    raw = with_params(task.raw, task.params)
    raw = with_params(
        raw,
        {
            "run.dir": str(trial_dir(task.run_dir, task.number, fold, task.folds)),
            "train.progress": False,
        },
    )
    return from_dict(raw)


def run_fold(
    task: TrialTask,
    fold: int,
    *,
    make_strategy: Callable[[Config], Any] | None = None,
    report: Reporter | None = None,
    interruptible: bool = True,
) -> FoldResult:
    """Train fold `fold` of the trial; errors become a failed FoldResult, never an exception.

    `make_strategy(cfg)`: the distribution strategy of this process (default: none);
    `interruptible`: whether this process may stop training on its own (timeout, pruning);
    False where other processes train the same model and would wait for this one.
    """
    t0 = time.perf_counter()
    deadline = t0 + task.trial_timeout if task.trial_timeout else math.inf

    def on_epoch(epochs: int, metrics: dict[str, float]) -> None:
        if time.perf_counter() > deadline:
            raise TrialTimeout(f"trial {task.number} passed trial_timeout={task.trial_timeout} s")
        value = metrics.get(task.objective)
        if report is not None and value is not None and report(epochs, float(value)):
            raise TrialPruned(f"trial {task.number} pruned after {epochs} epochs")

    try:
        from scaletrain.data.arrays import open_data
        from scaletrain.train.trainer import Trainer

        cfg = trial_config(task, fold)
        # data.source (the user's arrays) or data.path's showers, split into the K folds
        data = open_data(cfg, n_folds=task.folds if task.folds > 1 else 0, fold=fold)
        trainer = Trainer(
            cfg,
            strategy=make_strategy(cfg) if make_strategy is not None else None,
            overwrite=True,
            data=data,
            epoch_callback=on_epoch if interruptible else None,
        )
        try:
            result = trainer.serve() if trainer.strategy.serves else trainer.fit()
        finally:
            trainer.metrics.close()
            trainer.strategy.close()
    except TrialPruned:
        return FoldResult(fold, pruned=True, seconds=time.perf_counter() - t0)
    except ConfigError as exc:
        return FoldResult(fold, error=str(exc), fatal=True, seconds=time.perf_counter() - t0)
    except Exception as exc:  # the trial failed; the study goes on (the error is kept)
        message = (
            f"{type(exc).__name__}: {exc}" if not isinstance(exc, ScaletrainError) else str(exc)
        )
        return FoldResult(fold, error=message, seconds=time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    if seconds > deadline - t0:
        return FoldResult(
            fold,
            error=f"trial {task.number} passed trial_timeout={task.trial_timeout} s",
            metrics=result.metrics,
            seconds=seconds,
        )
    if not trainer.strategy.is_main:
        return FoldResult(fold, seconds=seconds)  # the fold's main process reports
    if task.objective not in result.metrics:
        reported = ", ".join(sorted(result.metrics)) or "nothing"
        return FoldResult(
            fold,
            error=f"search.objective {task.objective!r} is not a metric of this task "
            f"(it reports: {reported})",
            fatal=True,
            seconds=seconds,
        )
    return FoldResult(fold, float(result.metrics[task.objective]), result.metrics, seconds=seconds)


def summarize(results: list[FoldResult]) -> Outcome:
    """The K folds as one trial outcome: mean and std of the objective over the folds."""
    results = sorted(results, key=lambda r: r.fold)
    values = [r.value for r in results]
    seconds = max((r.seconds for r in results), default=0.0)
    errors = [r for r in results if r.error]
    if errors:
        first = errors[0]
        where = f"fold {first.fold}: " if len(results) > 1 else ""
        return Outcome("fail", None, None, values, where + str(first.error),
                       any(r.fatal for r in errors), seconds)  # fmt: skip
    if any(r.pruned for r in results):
        return Outcome("pruned", None, None, values, seconds=seconds)
    if any(v is None or not math.isfinite(v) for v in values):
        bad = next(r.fold for r in results if r.value is None or not math.isfinite(r.value))
        return Outcome("fail", None, None, values, f"fold {bad}: objective is {values[bad]}",
                       seconds=seconds)  # fmt: skip
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return Outcome("complete", float(array.mean()), std, values, seconds=seconds)
