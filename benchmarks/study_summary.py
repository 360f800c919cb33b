"""Summarize a physics study (benchmarks/physics_study.sh): one Markdown table and one figure.

Usage: python benchmarks/study_summary.py DIR RUN [RUN ...]
DIR holds, per run, RUN.metrics.jsonl (the run's metrics) and RUN.scores.json (the report's
scores.json of its best.pt); writes DIR/study.png: val/fidelity after each epoch (every run
sees the same showers in an epoch), and the sampled fraction and resolution of the generated
showers over the reference's per energy bin.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def epochs(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.open()]
    return [r for r in rows if "val/fidelity" in r]


def main(out: Path, runs: list[str]) -> None:
    all_rows = {run: epochs(out / f"{run}.metrics.jsonl") for run in runs}
    # the epochs every run reached, second half: where the runs compare at equal data
    last = min(len(rows) for rows in all_rows.values())
    common = range(last // 2 + 1, last + 1)
    fig, (ax_fid, ax_sf, ax_res) = plt.subplots(1, 3, figsize=(16, 4.5))
    print(
        "| run | epochs | s per epoch | best val/fidelity (epoch) | median val/fidelity, "
        f"epochs {common[0]}-{common[-1]} | fidelity 10k | SF rel. err. | resolution ratio | AUC |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for run in runs:
        rows = all_rows[run]
        scores = json.loads((out / f"{run}.scores.json").read_text())
        fid = [r["val/fidelity"] for r in rows]
        ax_fid.plot([r["epoch"] for r in rows], fid, marker=".", label=run)
        spans = [b["time"] - a["time"] for a, b in itertools.pairwise(rows)]
        best = min(rows, key=lambda r: r["val/fidelity"])
        late = statistics.median(r["val/fidelity"] for r in rows if r["epoch"] in common)
        bins = scores["bins"]
        names = [b for b in bins if "sf_rel_error" in bins[b]]
        ax_sf.plot(names, [1 + bins[b]["sf_rel_error"] for b in names], marker="o", label=run)
        ax_res.plot(names, [bins[b]["resolution_ratio"] for b in names], marker="o", label=run)
        overall = scores["overall"]
        print(
            f"| {run} | {len(rows)} | {statistics.median(spans):.0f} | "
            f"{best['val/fidelity']:.1f} ({best['epoch']}) | {late:.1f} | "
            f"{scores['fidelity']:.2f} | {100 * overall['sf_rel_error']:+.1f} % | "
            f"{overall['resolution_ratio']:.2f} | {overall['auc']:.3f} |"
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


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
