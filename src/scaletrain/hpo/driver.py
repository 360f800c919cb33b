"""The ask/tell loop: ask the sampler for trials while an evaluator has free slots, tell the
study each outcome. The evaluator is this process (folds in sequence) or the groups of an
MPI job (see coordinator.py); the loop is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from scaletrain.config import SearchConfig
from scaletrain.errors import ConfigError, TrainingError
from scaletrain.hpo.samplers import ready
from scaletrain.hpo.storage import counted
from scaletrain.hpo.trial import FoldResult, Outcome, TrialTask, run_fold, summarize

# reporter(trial number, epochs done, objective) -> whether to prune
TrialReporter = Callable[[int, int, float], bool]


class Evaluator(Protocol):
    slots: int  # trials that can run at once
    reporter: TrialReporter | None

    def submit(self, task: TrialTask) -> None: ...

    def poll(self, wait_s: float) -> list[tuple[int, list[FoldResult]]]: ...


class LocalEvaluator:
    """Runs each trial in this process as soon as it is submitted, its folds in sequence."""

    slots = 1

    def __init__(self) -> None:
        self.reporter: TrialReporter | None = None
        self._done: list[tuple[int, list[FoldResult]]] = []

    def submit(self, task: TrialTask) -> None:
        results = []
        for fold in range(task.folds):
            report = None
            if task.prune and fold == 0 and self.reporter is not None:  # fold 0's curve only

                def report(epochs: int, value: float, n: int = task.number) -> bool:
                    return self.reporter(n, epochs, value)

            results.append(run_fold(task, fold, report=report))
        self._done.append((task.number, results))

    def poll(self, wait_s: float) -> list[tuple[int, list[FoldResult]]]:
        done, self._done = self._done, []
        return done


def drive(
    study: optuna.Study,
    sampler: optuna.samplers.BaseSampler,
    distributions: dict[str, Any],
    evaluator: Evaluator,
    make_task: Callable[[optuna.Trial], TrialTask],
    search: SearchConfig,
    on_told: Callable[[FrozenTrial, Outcome], None] | None = None,
) -> None:
    """Ask, evaluate and tell until the study holds search.trials trials or search.timeout
    has passed; a failing trial is recorded and the study goes on."""
    running: dict[int, optuna.Trial] = {}
    deadline = time.monotonic() + search.timeout if search.timeout else math.inf
    fatal: str | None = None
    waited_since: float | None = None

    def reporter(number: int, epochs: int, value: float) -> bool:
        trial = running.get(number)
        if trial is None or not math.isfinite(value):
            return False
        trial.report(value, epochs)
        return trial.should_prune()

    evaluator.reporter = reporter
    while True:
        asking = fatal is None and time.monotonic() < deadline
        while (
            asking
            and len(running) < evaluator.slots
            and counted(study) < search.trials
            and ready(sampler, study)
        ):
            trial = study.ask(distributions)
            running[trial.number] = trial
            evaluator.submit(make_task(trial))
        if not running:
            if not asking or counted(study) >= search.trials:
                break
            if evaluator.slots == 0:
                raise TrainingError("every group of the MPI job is lost; the study stops")
            # another process evaluates the current generation: wait for its results
            waited_since = waited_since or time.monotonic()
            if time.monotonic() - waited_since > (search.trial_timeout or 3600.0) * 2:
                raise TrainingError(
                    "waited too long for trials of the current generation running elsewhere"
                )
            time.sleep(0.5)
            continue
        waited_since = None
        for number, results in evaluator.poll(0.05):
            outcome = summarize(results)
            frozen = tell(study, running.pop(number), outcome)
            if on_told is not None:
                on_told(frozen, outcome)
            if outcome.fatal:
                fatal = outcome.error
    if fatal is not None:
        raise ConfigError(fatal)


def tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> FrozenTrial:
    """Record the outcome; the sampler sees the mean over folds, user attributes keep the rest."""
    trial.set_user_attr("fold_values", outcome.fold_values)
    if outcome.std is not None:
        trial.set_user_attr("std", outcome.std)
    trial.set_user_attr("seconds", round(outcome.seconds, 3))
    if outcome.error:
        trial.set_user_attr("error", outcome.error)
    if outcome.state == "complete":
        return study.tell(trial, outcome.value)
    if outcome.state == "pruned":
        return study.tell(trial, state=TrialState.PRUNED)
    return study.tell(trial, state=TrialState.FAIL)
