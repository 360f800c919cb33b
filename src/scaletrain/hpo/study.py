"""`optimize`: one hyper-parameter study, in this process or over the groups of an MPI job."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from scaletrain.config import Config
from scaletrain.errors import ConfigError
from scaletrain.hpo import report, storage
from scaletrain.hpo.driver import Evaluator, LocalEvaluator, drive
from scaletrain.hpo.samplers import make_pruner, make_sampler
from scaletrain.hpo.space import distributions
from scaletrain.hpo.trial import TrialTask


@dataclass
class Options:
    """How the study runs: the MPI layout and what to do with an existing study."""

    groups: int = 1
    masters: int = 0
    workers: int = 1
    gpus: int = 1
    resume: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass
class StudyResult:
    run_dir: Path
    study_name: str
    storage: str
    trials: int
    complete: int
    best: dict[str, Any] | None
    seconds: float
    outputs: dict[str, Path] = field(default_factory=dict)
    requeued: list[int] = field(default_factory=list)
    study: Any = None


def optimize(
    cfg: Config, raw: dict[str, Any], options: Options | None = None
) -> StudyResult | None:
    """Run the study of `cfg.search` (raw: the same config as a plain dict, for the trials).

    Under an MPI launcher rank 0 coordinates and the other ranks train; only rank 0
    returns a result (the others return None).
    """
    from scaletrain.parallel.world import World

    options = options or Options()
    dists = distributions(cfg, raw)  # every rank checks the space: all fail alike
    world = World.detect()
    if world.size == 1:
        if options.groups > 1 or options.masters or options.workers > 1 or options.gpus > 1:
            raise ConfigError(
                "--groups/--masters/--workers/--gpus-per-worker need an MPI job: "
                "add --np N (or start it with mpirun)"
            )
        return run_study(cfg, raw, dists, LocalEvaluator(), options)
    from scaletrain.hpo.coordinator import run_mpi

    return run_mpi(cfg, raw, dists, options, world)


def run_study(
    cfg: Config,
    raw: dict[str, Any],
    dists: dict[str, Any],
    evaluator: Evaluator,
    options: Options,
    header: str | None = None,
) -> StudyResult:
    """Open the study, drive it with `evaluator`, write the outputs."""
    from scaletrain.train.rundir import prepare_run_dir

    search = cfg.search
    run_dir = Path(cfg.run.dir)
    shared = bool(search.storage)
    if shared and not (options.resume or options.overwrite):
        run_dir.mkdir(parents=True, exist_ok=True)  # several processes may share it
    else:
        prepare_run_dir(run_dir, resume=options.resume, overwrite=options.overwrite)
    url = storage.storage_url(search.storage, run_dir)
    name = search.study_name or run_dir.resolve().name
    sampler, pruner = make_sampler(search), make_pruner(search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = storage.open_study(
        url, name, direction=search.direction, sampler=sampler, pruner=pruner,
        resume=options.resume, overwrite=options.overwrite and shared, shared=shared,
    )  # fmt: skip
    requeued = storage.requeue_interrupted(study) if options.resume else []
    console = report.TrialProgress(search.trials, storage.counted(study), options.progress)
    if header:
        console.console.print(header)
    if requeued:
        console.console.print(f"resumed: re-enqueued interrupted trials {requeued}")
    prune = search.pruner != "none"
    process = f"{socket.gethostname()}:{os.getpid()}"

    def make_task(trial: optuna.Trial) -> TrialTask:
        trial.set_user_attr("process", process)  # who ran it, when several share a study
        return TrialTask(
            trial.number, dict(trial.params), raw, str(run_dir), search.folds,
            search.objective, search.trial_timeout, prune,
        )  # fmt: skip

    def on_told(trial, outcome) -> None:
        best = report.best_trial(study)
        console.told(trial, outcome, best.value if best else None)

    t0 = time.perf_counter()
    try:
        with console:
            drive(study, sampler, dists, evaluator, make_task, search, on_told)
    finally:  # whatever happened, what was learnt so far is written
        outputs = report.write_outputs(study, raw, run_dir)
    best = report.best_trial(study)
    complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    return StudyResult(
        run_dir, name, url, storage.counted(study), complete,
        report.best_summary(best) if best else None, time.perf_counter() - t0, outputs, requeued,
        study,
    )  # fmt: skip


def load_study(run_dir: str | Path, storage_url: str | None = None, name: str | None = None):
    """The study of a run directory (for notebooks and tests)."""
    run_dir = Path(run_dir)
    return optuna.load_study(
        study_name=name or run_dir.resolve().name,
        storage=storage.storage_url(storage_url, run_dir),
    )
