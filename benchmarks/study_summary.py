"""Summarize a physics study (benchmarks/physics_study.sh): Markdown tables and one figure.

Usage: python benchmarks/study_summary.py DIR RUN [RUN ...]
       python benchmarks/study_summary.py --epochs METRICS.jsonl   (val/fidelity per epoch)
DIR holds, per run, RUN.metrics.jsonl (the run's metrics) and RUN.scores.json (the report's
scores.json of its best.pt; a run without one, stopped before it was validated, shows its
epochs only). RUN may be a path relative to DIR (another study's run, named by its last
part). Runs named SETTING-sSEED (physics_study.sh's RUN:SEED) are one
setting trained from several seeds: a second table gives each setting's mean ± standard error
over its seeds. Writes DIR/study.png: val/fidelity after each epoch, and the sampled fraction
and resolution of the generated showers over the reference's per energy bin.
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def epochs(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.open()]
    return [r for r in rows if "val/fidelity" in r]


def setting(run: str) -> str:
    return re.sub(r"-s\d+$", "", run)


def mean_se(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    se = statistics.stdev(values) / len(values) ** 0.5
    return f"{statistics.mean(values):.2f} ± {se:.2f}"


def _best(rows: list[dict]) -> str:
    best = min(rows, key=lambda r: r["val/fidelity"])
    return f"{best['val/fidelity']:.1f} ({best['epoch']})"


def per_run_table(runs: list[str], all_rows: dict, scores: dict) -> None:
    # the epochs every run reached (all, and their second half): the runs at equal data
    last = min(len(rows) for rows in all_rows.values())
    common = range(last // 2 + 1, last + 1)
    print(
        f"| run | epochs | s per epoch | best val/fidelity (epoch) | best, epochs 1-{last} | "
        f"median val/fidelity, epochs {common[0]}-{common[-1]} | fidelity 10k | SF rel. err. | "
        "SF rel. err., lowest bin | resolution ratio | AUC |"
    )
    print("|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        rows = all_rows[run]
        spans = [b["time"] - a["time"] for a, b in itertools.pairwise(rows)]
        late = statistics.median(r["val/fidelity"] for r in rows if r["epoch"] in common)
        span = f"{statistics.median(spans):.0f}" if spans else "—"
        cells = ["—"] * 5  # not validated
        if run in scores:
            overall = scores[run]["overall"]
            lowest = next(iter(scores[run]["bins"].values()))  # large batches hurt (seed 001)
            cells = [f"{scores[run]['fidelity']:.2f}", f"{100 * overall['sf_rel_error']:+.1f} %",
                     f"{100 * lowest['sf_rel_error']:+.1f} %",
                     f"{overall['resolution_ratio']:.2f}", f"{overall['auc']:.3f}"]  # fmt: skip
        print(
            f"| {run} | {len(rows)} | {span} | {_best(rows)} | "
            f"{_best([r for r in rows if r['epoch'] <= last])} | {late:.1f} | "
            + " | ".join(cells)
            + " |"
        )


def per_setting_table(groups: dict[str, list[str]], scores: dict) -> None:
    bins = [b for b in next(iter(scores.values()))["bins"] if b != "all"]
    print(
        "\n| setting | seeds | fidelity 10k | "
        + " | ".join(f"fidelity {b}" for b in bins)
        + f" | SF rel. err. {bins[0]} (%) |"
    )
    print("|---|---:|---:|" + "---:|" * (len(bins) + 1))
    for name, runs in groups.items():
        cells = [mean_se([scores[r]["fidelity"] for r in runs])]
        cells += [mean_se([scores[r]["bins"][b]["fidelity"] for r in runs]) for b in bins]
        cells.append(mean_se([100 * scores[r]["bins"][bins[0]]["sf_rel_error"] for r in runs]))
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")


def plot(out: Path, groups: dict[str, list[str]], all_rows: dict, scores: dict) -> None:
    fig, (ax_fid, ax_sf, ax_res) = plt.subplots(1, 3, figsize=(16, 4.5))
    for color, (name, runs) in zip(
        plt.rcParams["axes.prop_cycle"].by_key()["color"], groups.items(), strict=False
    ):
        for i, run in enumerate(runs):
            rows = all_rows[run]
            ax_fid.plot(
                [r["epoch"] for r in rows],
                [r["val/fidelity"] for r in rows],
                marker=".",
                color=color,
                alpha=0.8,
                label=name if i == 0 else None,
            )
        runs = [r for r in runs if r in scores]  # the validated ones
        if not runs:
            continue
        bins = [b for b in scores[runs[0]]["bins"] if "sf_rel_error" in scores[runs[0]]["bins"][b]]
        for ax, key, shift in ((ax_sf, "sf_rel_error", 1), (ax_res, "resolution_ratio", 0)):
            values = [[shift + scores[r]["bins"][b][key] for r in runs] for b in bins]
            errors = [statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else 0 for v in values]
            ax.errorbar(
                bins,
                [statistics.mean(v) for v in values],
                yerr=errors,
                marker="o",
                capsize=3,
                color=color,
                label=f"{name} ({len(runs)})",
            )
    ax_fid.set(
        xlabel="epoch",
        ylabel="val/fidelity (2,000 showers)",
        yscale="log",
        title="fidelity after each epoch",
    )
    ax_sf.axhline(1, color="k", lw=0.8)
    ax_sf.set(ylabel="SF gen / SF ref", title="sampled fraction, best.pt (10k vs 10k)")
    ax_res.axhline(1, color="k", lw=0.8)
    ax_res.set(ylabel="resolution gen / ref", title="resolution, best.pt (10k vs 10k)")
    for ax in (ax_fid, ax_sf, ax_res):
        ax.legend()
    for ax in (ax_sf, ax_res):
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "study.png", dpi=90)
    print(f"\nwritten: {out / 'study.png'}")


def main(out: Path, paths: list[str]) -> None:
    where = {Path(p).name: out / p for p in paths}
    runs = list(where)
    all_rows = {run: epochs(Path(f"{path}.metrics.jsonl")) for run, path in where.items()}
    scores = {
        run: json.loads(Path(f"{path}.scores.json").read_text())
        for run, path in where.items()
        if Path(f"{path}.scores.json").exists()
    }
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(setting(run), []).append(run)
    per_run_table(runs, all_rows, scores)
    validated = {name: [r for r in g if r in scores] for name, g in groups.items()}
    validated = {name: g for name, g in validated.items() if g}
    if any(len(g) > 1 for g in validated.values()):
        per_setting_table(validated, scores)
    plot(out, groups, all_rows, scores)


if __name__ == "__main__":
    if sys.argv[1] == "--epochs":
        for r in epochs(Path(sys.argv[2])):
            print(f"  epoch {r['epoch']} step {r['step']} val/fidelity {r['val/fidelity']:.3f}")
    else:
        main(Path(sys.argv[1]), sys.argv[2:])
