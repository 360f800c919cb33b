"""`scaletrain data simulate | inspect`: make synthetic showers, look into shower files."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from scaletrain.errors import ConfigError, ScaletrainError

from ._app import data_app


def parse_values(text: str, name: str, scale: float = 1.0) -> float | tuple[float, float] | list:
    """'a:b' → (a, b) flat range; 'a,b,c' → list of values; 'a' → a (times `scale`)."""
    try:
        if ":" in text:
            lo, hi = (float(v) * scale for v in text.split(":"))
            return (lo, hi)
        values = [float(v) * scale for v in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--{name}: expected 'lo:hi', 'a,b,c' or a number, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _per_shower(value: float | tuple | list, n: int) -> float | tuple | np.ndarray:
    # a list of fixed values is cycled over the showers, so every shard holds all of them
    return np.resize(np.asarray(value, dtype=np.float64), n) if isinstance(value, list) else value


@data_app.command("simulate")
def simulate(
    out: Path = typer.Option(..., help="Output directory for showers_000.h5, ..."),
    n: int = typer.Option(..., help="Number of showers."),
    energies: str = typer.Option(
        "2:500", help="Primary energy in GeV: 'lo:hi' (flat), 'a,b,c' (cycled) or one value."
    ),
    particle: str = typer.Option("e-", help="Particle: e-, gamma or pi+ (cruder model)."),
    theta: str = typer.Option(
        "90", help="Polar angle in degrees (90 = perpendicular): 'lo:hi', 'a,b,c' or one value."
    ),
    seed: int = typer.Option(0, help="Random seed; the same seed gives identical files."),
    shard_size: int = typer.Option(10000, help="Showers per file."),
    workers: int = typer.Option(1, help="Worker processes."),
    compression: str | None = typer.Option(None, help="HDF5 compression of ECAL: gzip or lzf."),
    overwrite: bool = typer.Option(False, help="Replace existing shards in --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Simulate calorimeter showers (GFlash parametrization) into HDF5 shards."""
    from scaletrain.data.simulator import simulate_to_files

    energy_spec = _per_shower(parse_values(energies, "energies"), n)
    theta_spec = _per_shower(parse_values(theta, "theta", math.pi / 180), n)
    start = time.perf_counter()
    paths = simulate_to_files(
        out, n, energy_spec, particle=particle, theta=theta_spec, seed=seed,
        shard_size=shard_size, workers=workers, progress=progress, compression=compression,
        overwrite=overwrite,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    rate = n / seconds if seconds > 0 else float("inf")
    Console().print(
        f"wrote {len(paths)} file(s), {n:,} {particle} showers to {out} "
        f"in {seconds:.1f} s ({rate:,.0f} showers/s, {workers} worker(s))"
    )


@data_app.command("inspect")
def inspect(
    paths: list[str] = typer.Argument(..., help="Files, directories or globs."),
    max_rows: int = typer.Option(10000, help="Rows per file read for the statistics."),
) -> None:
    """Check shower files and summarize them, one row per file."""
    from scaletrain.data.io import check_file, expand_paths

    table = Table(title="shower files")
    columns = ("file", "N", "energy GeV", "sum(ECAL)/E", "theta deg", "particles", "metadata")
    for name in columns:
        table.add_column(name, justify="left" if name in ("file", "metadata") else "right")
    errors: list[str] = []
    for spec in paths:
        try:
            files = expand_paths(spec)
        except ScaletrainError as exc:
            errors.append(str(exc))
            continue
        for path in files:
            try:
                table.add_row(*_summary(check_file(path), max_rows))
            except ScaletrainError as exc:
                errors.append(str(exc))
    console = Console()
    if not console.is_terminal:  # pipes and logs: do not wrap file names at 80 columns
        console = Console(width=200)
    if table.row_count:
        console.print(table)
    for line in errors:
        Console(stderr=True).print(f"error: {line}", highlight=False, soft_wrap=True)
    if errors:
        raise typer.Exit(code=2)


def _summary(info, max_rows: int) -> tuple[str, ...]:
    from scaletrain.data.io import read_showers

    sums, energy, theta, pdg = [], [], [], []
    for start in range(0, min(info.n, max_rows), 1024):
        block = read_showers(info.path, start, min(start + 1024, info.n, max_rows))
        sums.append(block["ECAL"].sum(axis=(1, 2, 3), dtype=np.float64))
        energy.append(block["energy"])
        theta.append(block["theta"])
        pdg.append(block["pdg"])
    s, e, t = np.concatenate(sums), np.concatenate(energy), np.degrees(np.concatenate(theta))
    meta = info.metadata
    meta_text = " ".join(
        f"{k}={meta[k]}" for k in ("particle", "seed", "scaletrain_version") if k in meta
    )
    return (
        str(info.path),
        f"{info.n:,}",
        f"{e.min():.3g}–{e.max():.3g}",
        f"{np.mean(s / np.maximum(e, 1e-9)):.4f}",
        f"{t.min():.1f}–{t.max():.1f}",
        ",".join(str(p) for p in np.unique(np.concatenate(pdg))),
        meta_text,
    )
