"""`scaletrain train`, `scaletrain generate` and `scaletrain demo`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ._app import app

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
) -> None:
    """Train a model as configured; writes checkpoints, metrics and provenance to the run dir."""
    from scaletrain.config import load_config
    from scaletrain.train.trainer import train as run_training

    overrides = list(set_)
    if run_dir:
        overrides.append(f"run.dir={run_dir}")
    if device:
        overrides.append(f"run.device={device}")
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    cfg = load_config(config, overrides)
    result = run_training(cfg, resume=resume, overwrite=overwrite)
    console.print(
        f"trained {result.epochs} epochs ({result.steps} steps) in {result.seconds:.1f} s, "
        f"{result.samples_per_s:.1f} samples/s; run: {result.run_dir}"
    )
    if result.best:
        console.print(
            f"best {result.best['metric']} = {result.best['value']:.4g} "
            f"(epoch {result.best['epoch']}): {result.run_dir / 'best.pt'}"
        )


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
