"""`scaletrain info`: versions, devices and MPI availability."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ._app import app


@app.command()
def info() -> None:
    """Print package, PyTorch, CUDA, MPI and hardware information."""
    from scaletrain.train.provenance import environment_info

    table = Table(show_header=False, box=None)
    for key, value in environment_info().items():
        table.add_row(key, str(value))
    Console().print(table)
