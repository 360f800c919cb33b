"""What a study leaves behind: best parameters and a ready-to-train config, the trials as CSV,
plots (optuna.visualization.matplotlib), a summary table, and a progress bar over trials."""

from __future__ import annotations

import csv
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from scaletrain.config import from_dict, save_config
from scaletrain.hpo.evolution import GENERATION, VOID
from scaletrain.hpo.space import with_params
from scaletrain.hpo.trial import Outcome

PLOTS = ("history", "parallel_coordinates", "importances")


def write_outputs(study: optuna.Study, raw: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """best.json, best-config.yaml, trials.csv and the plots in run_dir; returns their paths."""
    out: dict[str, Path] = {"trials": write_trials_csv(study, run_dir / "trials.csv")}
    best = best_trial(study)
    if best is not None:
        out["best"] = _atomic_text(run_dir / "best.json", json.dumps(best_summary(best), indent=2))
        cfg = from_dict(with_params(raw, {**best.params, "run.dir": str(run_dir / "best")}))
        tmp = run_dir / f".best-config.yaml.{os.getpid()}"
        save_config(cfg, tmp)
        out["config"] = tmp.replace(run_dir / "best-config.yaml")
    out.update(write_plots(study, run_dir))
    return out


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return study.best_trial if complete else None


def best_summary(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "value": trial.value,
        "std": trial.user_attrs.get("std"),
        "fold_values": trial.user_attrs.get("fold_values"),
        "params": trial.params,
    }


def write_trials_csv(study: optuna.Study, path: Path) -> Path:
    trials = study.get_trials(deepcopy=False)
    names = sorted({k for t in trials for k in t.params})
    folds = max((len(t.user_attrs.get("fold_values") or []) for t in trials), default=0)
    head = ["number", "state", "value", "std", *(f"fold{k}" for k in range(folds)),
            "seconds", "generation", *names, "error"]  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        for t in trials:
            values = list(t.user_attrs.get("fold_values") or [])
            values += [None] * (folds - len(values))
            state = "interrupted" if t.system_attrs.get(VOID) else t.state.name.lower()
            writer.writerow([
                t.number, state, t.value, t.user_attrs.get("std"), *values,
                t.user_attrs.get("seconds"), t.system_attrs.get(GENERATION),
                *(t.params.get(n) for n in names), t.user_attrs.get("error"),
            ])  # fmt: skip
    return tmp.replace(path)


def write_plots(study: optuna.Study, run_dir: Path) -> dict[str, Path]:
    """PNG plots of the study; a plot that needs more finished trials is left out."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    makers = {
        "history": (vis.plot_optimization_history, 1),
        "parallel_coordinates": (vis.plot_parallel_coordinate, 2),
        "importances": (vis.plot_param_importances, 2),
    }
    out = {}
    for name, (make, needed) in makers.items():
        if len(complete) < needed:
            continue
        path = run_dir / f"{name}.png"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-API and few-trials warnings
            try:
                ax = make(study)
            except Exception as exc:  # a plot must not cost the study's other outputs
                warnings.warn(f"plot {name} left out: {exc}", stacklevel=2)
                continue
        fig = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
        fig.set_size_inches(8, 5)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        out[name] = path
    return out


def summary_table(study: optuna.Study, top: int = 10) -> Table:
    """The best trials (value ± std over folds) with their parameters, and the state counts."""
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    complete.sort(key=lambda t: t.value, reverse=reverse)
    names = sorted({k for t in trials for k in t.params})
    counts = {s: sum(1 for t in trials if t.state == s and not t.system_attrs.get(VOID))
              for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}  # fmt: skip
    caption = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items())
    table = Table(title=f"study {study.study_name}: best of {len(trials)} trials", caption=caption)
    table.add_column("trial", justify="right")
    table.add_column("objective", justify="right")
    for name in names:
        table.add_column(name, justify="right")
    for t in complete[:top]:
        std = t.user_attrs.get("std")
        value = f"{t.value:.5g}" + (f" ± {std:.2g}" if std else "")
        table.add_row(str(t.number), value, *(_fmt(t.params.get(n)) for n in names))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _atomic_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text + "\n")
    return tmp.replace(path)


class TrialProgress:
    """A progress bar over the study's trials with the best value so far."""

    def __init__(self, total: int, done: int, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self._progress = None
        self.best: float | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.description}"), TimeElapsedColumn(),
                console=self.console, transient=False,
            )  # fmt: skip
            self._task = self._progress.add_task("", total=total, completed=done)

    def __enter__(self) -> TrialProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def told(self, trial: FrozenTrial, outcome: Outcome, best: float | None) -> None:
        if outcome.state == "complete":
            std = f" ± {outcome.std:.2g}" if outcome.std else ""
            line = f"trial {trial.number}: {outcome.value:.5g}{std}"
        elif outcome.state == "pruned":
            line = f"trial {trial.number}: pruned"
        else:
            line = f"trial {trial.number}: failed ({outcome.error})"
        self.console.print(line)
        if self._progress is not None:
            desc = f"best {best:.5g}" if best is not None and math.isfinite(best) else ""
            self._progress.update(self._task, advance=1, description=desc)
