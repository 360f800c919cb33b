"""The Typer applications that the command modules attach their commands to."""

import typer

app = typer.Typer(
    name="scaletrain",
    help="Train, distribute and hyper-optimize neural networks; simulate and validate "
    "calorimeter showers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Simulate and inspect calorimeter-shower data.", no_args_is_help=True)
bench_app = typer.Typer(help="Throughput and scaling benchmarks.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")


def debug_enabled() -> bool:
    """Whether --debug was given (full tracebacks instead of one-line errors)."""
    return _state["debug"]


_state = {"debug": False}


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _state["debug"] = debug
