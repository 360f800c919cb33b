"""`scaletrain validate`: physics comparison of generated with reference showers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from scaletrain.errors import ConfigError

from ._app import app


def _parse_edges(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--energy-bins must be comma-separated numbers (GeV), got '{text}'"
        ) from None


@app.command()
def validate(
    generated: Path = typer.Argument(..., help="HDF5 file of generated showers."),
    reference: Path = typer.Option(..., "--reference", "-r", help="Reference shower file."),
    report: Path | None = typer.Option(None, "--report", help="Write plots and scores here."),
    energy_bins: str | None = typer.Option(
        None, "--energy-bins", help="Bin edges in GeV, e.g. 10,50,100,200 (default: automatic)."
    ),
    max_showers: int | None = typer.Option(
        None, "--max-showers", min=1, help="Read at most this many showers per file."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier two-sample test."),
) -> None:
    """Compare generated with reference showers: scores per energy bin and overall fidelity."""
    from scaletrain.calo import validate_files

    result = validate_files(
        generated,
        reference,
        report,
        energy_bins=_parse_edges(energy_bins),
        max_showers=max_showers,
        overwrite=overwrite,
        seed=seed,
    )
    console = Console()
    if not console.is_terminal:
        # piped or captured: no terminal width to respect, keep the table whole
        console = Console(width=160)
    console.print(_table(result.scores))
    console.print(f"fidelity: [bold]{result.fidelity:.4f}[/bold] (lower is better)")
    if result.report_dir is not None:
        console.print(f"report: {result.report_dir / 'report.html'}", soft_wrap=True)


def _table(scores: dict) -> Table:
    table = Table(title="generated vs reference, per primary-energy bin")
    for head in (
        "energy bin", "n gen/ref", "SF gen", "SF ref", "SF err", "resol. gen", "resol. ref",
        "chi2/ndf long", "W sf", "W widths", "W mean", "AUC", "fidelity",
    ):  # fmt: skip
        table.add_column(head, justify="right")
    for label, s in [*scores["bins"].items(), ("all", scores["overall"])]:
        n = f"{s['n_gen']}/{s['n_ref']}"
        if s.get("skipped"):
            table.add_row(label, n, *["-"] * 11)
            continue
        w = s["wasserstein"]
        table.add_row(
            label,
            n,
            f"{s['sf_mean_gen']:.5f}",
            f"{s['sf_mean_ref']:.5f}",
            f"{s['sf_rel_error']:+.2%}",
            f"{s['resolution_gen']:.4f}",
            f"{s['resolution_ref']:.4f}",
            f"{s['chi2_ndf']['long']:.2f}",
            f"{w['sf']:.3f}",
            f"{(w['width_x'] + w['width_y'] + w['width_z']) / 3:.3f}",
            f"{s['wasserstein_mean']:.3f}",
            f"{s['auc']:.3f}",
            f"{s['fidelity']:.3f}",
        )
    return table
