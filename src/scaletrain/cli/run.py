"""`scaletrain train`, `scaletrain generate` and `scaletrain demo`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from scaletrain.errors import ConfigError, LayoutError, ScaletrainError

from ._app import app, debug_enabled

console = Console()


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML config file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: section.key=value (repeatable)."
    ),
    run_dir: str = typer.Option(None, "--run-dir", help="Run directory (overrides run.dir)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the run directory from its last checkpoint."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda (overrides run.device)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (overrides train.epochs)."),
    mode: str = typer.Option(
        None,
        "--mode",
        help="none, allreduce, downpour, easgd, gem or pipeline (overrides parallel.mode).",
    ),
    np_: int = typer.Option(
        None, "--np", min=1, help="Run on this many processes: re-executes under mpiexec -n NP."
    ),
    masters: int = typer.Option(None, "--masters", help="Parameter servers (parallel.masters)."),
    workers: int = typer.Option(
        None, "--workers", help="Workers per master (parallel.workers; 0 = all other ranks)."
    ),
) -> None:
    """Train a model as configured; writes checkpoints, metrics and provenance to the run dir.

    On SIGTERM or SIGUSR1 (train.stop_signals): checkpoint, exit code 75; --resume goes on."""

    from scaletrain.config import load_config
    from scaletrain.parallel import World, advice, make_layout, make_strategy
    from scaletrain.parallel.launch import register_with_launcher, relaunch
    from scaletrain.parallel.world import launched_by_mpi
    from scaletrain.train.stopping import EXIT_STOPPED, StopSignals
    from scaletrain.train.trainer import train as run_training

    overrides = list(set_)
    for key, value in (
        ("run.dir", run_dir),
        ("run.device", device),
        ("train.epochs", epochs),
        ("parallel.mode", mode),
        ("parallel.masters", masters),
        ("parallel.workers", workers),
    ):
        if value is not None and value != "":
            overrides.append(f"{key}={value}")
    cfg = load_config(config, overrides)  # checked once, before any process is started
    stop = StopSignals(cfg.train.stop_signals)  # (the names too)
    if np_ and np_ > 1 and not launched_by_mpi():
        if cfg.parallel.mode == "none":
            raise ConfigError(f"--np {np_} needs a distribution mode: --mode allreduce, ...")
        make_layout(cfg.parallel, np_)  # a layout that cannot fill NP ranks fails here, once
        if cfg.parallel.mode == "pipeline":  # as must models with fewer layers than stages
            from scaletrain.models.registry import build_models
            from scaletrain.parallel.pipeline import check_pipeline

            check_pipeline(
                build_models(cfg.model.name, cfg.model.args), np_, cfg.parallel.pipeline_split
            )
        flags = [f"--{k}" for k, v in (("resume", resume), ("overwrite", overwrite)) if v]
        argv = ["train", str(config), *(a for o in overrides for a in ("--set", o)), *flags]
        argv = ["--debug", *argv] if debug_enabled() else argv
        raise typer.Exit(relaunch(np_, argv, forward=stop.signals))
    world = World.detect()
    register_with_launcher()  # for a --np launcher's stop signals
    if world.rank == 0:
        for note in advice(cfg):
            console.print(f"[yellow]warning:[/] {note}", highlight=False)
    if np_ and world.size != np_:
        raise ConfigError(f"--np {np_} but the launcher started {world.size} processes")
    try:
        strategy = make_strategy(cfg.parallel, world)
        with stop:
            result = run_training(
                cfg, resume=resume, overwrite=overwrite, strategy=strategy,
                stop=stop if stop.signals else None,
            )  # fmt: skip
    except ScaletrainError as exc:
        if world.size == 1:
            raise
        if isinstance(exc, LayoutError):  # every rank has it, table and all: said once
            if world.rank == 0:
                print(f"error: rank 0: {exc}", file=sys.stderr, flush=True)
            raise typer.Exit(2) from None
        # the other ranks would wait for this one: report, then stop the whole job
        print(f"error: rank {world.rank}: {exc}", file=sys.stderr, flush=True)
        world.abort(2)
        if debug_enabled():
            raise
        raise typer.Exit(2) from None  # said once (some MPI libraries' Abort returns)
    code = EXIT_STOPPED if result.stopped else 0
    if not strategy.is_main:
        world.close(cfg.parallel.timeout_s, last=False)
        raise typer.Exit(code)  # one summary, from the rank that holds the run directory
    if result.stopped:
        console.print(
            f"stopped by {result.stopped} after step {result.steps} (in epoch "
            f"{result.epochs + 1}): checkpoint {result.checkpoint}; continue with the same "
            f"command and --resume (exit code {EXIT_STOPPED})",
            soft_wrap=True,  # the path in one piece
        )
    console.print(
        f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds:.1f} s, "
        f"{result.samples_per_s:.1f} samples/s; run: {result.run_dir}"
    )
    if result.best:
        console.print(
            f"best {result.best['metric']} = {result.best['value']:.4g} "
            f"(epoch {result.best['epoch']}): {result.run_dir / 'best.pt'}"
        )
    # after a lost rank MPI_Finalize would wait forever: the main rank, the last to finish,
    # ends the job then (MPI_Abort(0), its results written)
    world.close(cfg.parallel.timeout_s, last=True)
    raise typer.Exit(code)


@app.command()
def generate(
    checkpoint: Path = typer.Argument(
        ..., help="Checkpoint of a trained GAN (e.g. runs/x/best.pt) or its run directory."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output HDF5 file."),
    n: int = typer.Option(10000, "--n", help="Number of showers."),
    energies: str = typer.Option(
        "10:500",
        "--energies",
        help="Primary energies in GeV: 100, 10:500 (flat) or 10,50,100 (cycled).",
    ),
    batch_size: int = typer.Option(1024, "--batch-size", help="Showers per generator call."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    fast: bool = typer.Option(
        None,
        "--fast/--no-fast",
        help="bf16 compiled generator with an async writer (default: on with CUDA).",
        show_default=False,
    ),
) -> None:
    """Generate showers with a trained generator into an HDF5 file (3DGAN layout)."""
    from scaletrain.generate import generate_file

    result = generate_file(
        checkpoint,
        out,
        n=n,
        energies=energies,
        batch_size=batch_size,
        device=device,
        seed=seed,
        overwrite=overwrite,
        fast=fast,
    )
    console.print(
        f"generated {result.n} showers in {result.seconds:.1f} s "
        f"({result.showers_per_s:.0f} showers/s on {result.device}): {result.path}"
    )


@app.command()
def demo(
    out: Path = typer.Option(
        Path("runs/demo"),
        "--out",
        help="Directory for everything the demo writes (replaced on each run).",
    ),
    n_train: int = typer.Option(1250, "--n-train", min=100, help="Simulated training showers."),
    n_compare: int = typer.Option(
        600, "--n-compare", min=50, help="Showers generated and simulated for the comparison."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a key of the demo config."),
) -> None:
    """Simulate showers, train a narrow 3DGAN on CPU, generate and validate: the whole loop."""
    from scaletrain.demo import run_demo

    result = run_demo(
        out, n_train=n_train, n_compare=n_compare, overrides=tuple(set_), console=console
    )
    console.rule("[bold]done")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    console.print(f"time: {timing} (total {sum(result.seconds.values()):.0f} s)")
    console.print(f"checkpoint: {result.checkpoint}")
    console.print(f"generated showers: {result.generated}")
    console.print(
        f"validation report: {result.report / 'report.html'} "
        f"(fidelity {result.fidelity:.3f}, lower is better)"
    )
    console.print(
        f"metrics: {result.checkpoint.parent / 'metrics.jsonl'} "
        f"(tensorboard --logdir {result.checkpoint.parent / 'tensorboard'})"
    )
