"""`scaletrain optimize`: a hyper-parameter study of a config's `search:` section."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from scaletrain.errors import ScaletrainError

from ._app import app, debug_enabled

console = Console()


@app.command()
def optimize(
    config: Path = typer.Argument(..., help="YAML config with a search: section."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: section.key=value (repeatable)."
    ),
    run_dir: str = typer.Option(None, "--run-dir", help="Study directory (overrides run.dir)."),
    trials: int = typer.Option(None, "--trials", min=1, help="Trials in the study in total."),
    timeout: float = typer.Option(None, "--timeout", help="Stop asking for trials after S s."),
    sampler: str = typer.Option(
        None, "--sampler", help="gp, tpe, random, cmaes or evolution (search.sampler)."
    ),
    folds: int = typer.Option(None, "--folds", min=1, help="K-fold cross validation: K models."),
    groups: int = typer.Option(1, "--groups", min=1, help="Trials evaluated at once (MPI)."),
    masters: int = typer.Option(
        0, "--masters", min=0, help="Parameter servers per fold (0: all-reduce only)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Workers per master."),
    gpus: int = typer.Option(
        1, "--gpus-per-worker", min=1, help="Processes per worker, all-reducing gradients."
    ),
    storage: str = typer.Option(
        None, "--storage", help="Optuna storage URL (default: sqlite in the run directory)."
    ),
    study_name: str = typer.Option(None, "--study-name", help="Study name in the storage."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the study; interrupted trials run again."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing study."),
    np_: int = typer.Option(
        None, "--np", min=1, help="Run on this many processes: re-executes under mpiexec -n NP."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
) -> None:
    """Optimize hyper-parameters: Optuna ask/tell over trials, K folds each, on MPI groups."""
    import sys

    from scaletrain.config import apply_override, from_dict, read_yaml
    from scaletrain.hpo.study import Options
    from scaletrain.hpo.study import optimize as run_optimize
    from scaletrain.parallel.launch import relaunch
    from scaletrain.parallel.layout import Layout
    from scaletrain.parallel.world import World, launched_by_mpi

    overrides = list(set_)
    for key, value in (
        ("run.dir", run_dir),
        ("search.trials", trials),
        ("search.timeout", timeout),
        ("search.sampler", sampler),
        ("search.folds", folds),
        ("search.storage", storage),
        ("search.study_name", study_name),
    ):
        if value is not None and value != "":
            overrides.append(f"{key}={value}")
    raw = read_yaml(config)
    for item in overrides:
        apply_override(raw, item)
    cfg = from_dict(raw)  # checked once, before any process is started
    options = Options(groups, masters, workers, gpus, resume, overwrite, progress)
    if np_ and np_ > 1 and not launched_by_mpi():
        layout = Layout(groups, cfg.search.folds, masters, workers, gpus, coordinator=True)
        layout.check(np_)  # prints the role table when NP does not fit
        flags = [f"--{k}" for k, v in (("resume", resume), ("overwrite", overwrite)) if v]
        argv = [
            "optimize", str(config), *(a for o in overrides for a in ("--set", o)), *flags,
            "--groups", str(groups), "--masters", str(masters), "--workers", str(workers),
            "--gpus-per-worker", str(gpus), "--no-progress" if not progress else "--progress",
        ]  # fmt: skip
        raise typer.Exit(relaunch(np_, ["--debug", *argv] if debug_enabled() else argv))
    world = World.detect()
    try:
        result = run_optimize(cfg, raw, options)
    except ScaletrainError as exc:
        if world.size == 1:
            raise
        print(f"error: rank {world.rank}: {exc}", file=sys.stderr, flush=True)
        world.abort(2)
        raise
    if result is None:
        return  # a training rank of an MPI job: rank 0 reports
    from scaletrain.hpo.report import summary_table

    console.print(summary_table(result.study))
    console.print(
        f"{result.trials} trials ({result.complete} complete) in {result.seconds:.1f} s; "
        f"study {result.study_name!r} in {result.storage}"
    )
    if result.best is not None:
        std = result.best.get("std")
        spread = f" ± {std:.3g}" if std else ""
        console.print(
            f"best {cfg.search.objective} = {result.best['value']:.5g}{spread} "
            f"(trial {result.best['number']}): {result.best['params']}"
        )
    for name, path in result.outputs.items():
        console.print(f"  {name}: {path}")
