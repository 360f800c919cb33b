"""Command-line entry point: parse, call one library function, print a summary.

Errors of the project's own types are printed as one line on stderr with exit code 2;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import sys

from scaletrain.errors import ScaletrainError

from ._app import app, debug_enabled

# command modules attach their commands to the apps on import
from . import bench, data, info, optimize, run, validate  # noqa: F401  isort: skip


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by tests and the console script)."""
    try:
        app(args=argv, prog_name="scaletrain", standalone_mode=True)
    except SystemExit as exc:  # the CLI library exits on success, usage errors and --help
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ScaletrainError as exc:
        if debug_enabled():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no: unwritable, full, not a directory...
        if debug_enabled():
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def entry() -> None:
    sys.exit(main())
