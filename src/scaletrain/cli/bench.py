"""`scaletrain bench ...`: throughput benchmarks (sim here; gen, train, scaling beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ._app import bench_app


@bench_app.command("sim")
def bench_sim(
    energy: float = typer.Option(100.0, help="Primary energy of every shower, GeV."),
    n: int = typer.Option(2000, help="Number of showers to simulate."),
    workers: int = typer.Option(1, help="Worker processes."),
    particle: str = typer.Option("e-", help="Particle: e-, gamma or pi+."),
    spots: str = typer.Option(
        "sampling", help="Spot model: 'sampling' (default, fast) or 'gflash' (reference)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Simulator throughput: showers/s and showers/s per core."""
    from scaletrain.bench.simulate import bench_simulation
    from scaletrain.data.simulator import SimConfig

    result = bench_simulation(
        energy, n, workers=workers, particle=particle, config=SimConfig(spots=spots)
    )
    table = Table(title="simulator throughput")
    for key in ("particle", "energy GeV", "showers", "workers", "spots", "seconds"):
        table.add_column(key, justify="right")
    table.add_column("showers/s", justify="right")
    table.add_column("per core", justify="right")
    table.add_row(
        result.particle, f"{result.energy_gev:g}", str(result.n), str(result.workers),
        result.spots, f"{result.seconds:.2f}", f"{result.showers_per_s:,.0f}",
        f"{result.showers_per_s_per_core:,.0f}",
    )  # fmt: skip
    Console().print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
