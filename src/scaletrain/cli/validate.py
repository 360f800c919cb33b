"""validate commands."""

from ._app import app, bench_app, data_app  # noqa: F401
