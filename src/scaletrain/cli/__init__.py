"""Command-line entry point: parse, call one library function, print a summary.

Errors of the project's own types are printed as one line on stderr with exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click
import typer

from scaletrain.errors import ScaletrainError

from ._app import app, debug_enabled

# command modules attach their commands to the apps on import
from . import bench, data, info, run, validate  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by tests and the console script)."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="scaletrain", standalone_mode=False)
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except ScaletrainError as exc:
        if debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
