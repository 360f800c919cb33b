"""Validation plots: generated vs reference overlaid, with a gen/ref ratio panel under each."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from .binning import EnergyBin
from .observables import Observables, cell_bin_edges
from .scores import MOMENT_KEYS

GEN, REF = "tab:red", "black"
MAX_COLS = 4


def write_plots(
    gen: Observables,
    ref: Observables,
    bins: list[EnergyBin],
    out_dir: Path,
    *,
    direction: bool = False,
) -> list[str]:
    """Draw every plot into out_dir; returns the file names written."""
    pairs = [(b, b.mask(gen.energy), b.mask(ref.energy)) for b in bins]
    pairs = [(b, mg, mr) for b, mg, mr in pairs if mg.sum() > 1 and mr.sum() > 1]
    figures: dict[str, Callable[[], plt.Figure]] = {
        "sf_vs_energy.png": lambda: _sf_vs_energy(gen, ref, pairs),
        "sf_distribution.png": lambda: _per_bin_hist(
            gen, ref, pairs, lambda o: o.scalars["sf"], "sum(ECAL) / Ep"
        ),
        "longitudinal.png": lambda: _per_bin_profile(gen, ref, pairs, "long", "layer z"),
        "transverse_x.png": lambda: _per_bin_profile(gen, ref, pairs, "prof_x", "x (cells)"),
        "transverse_y.png": lambda: _per_bin_profile(gen, ref, pairs, "prof_y", "y (cells)"),
        "cell_spectrum.png": lambda: _cell_spectrum(gen, ref, pairs),
        "hits.png": lambda: _per_bin_hist(
            gen, ref, pairs, lambda o: o.scalars["hits"], f"cells > {gen.threshold:g} GeV"
        ),
        "moments.png": lambda: _moments(gen, ref, MOMENT_KEYS),
    }
    if direction:
        figures["direction.png"] = lambda: _moments(gen, ref, ("slope_x", "slope_y", "direction"))
    written = []
    for name, draw in figures.items():
        fig = draw()
        _save(fig, out_dir / name)
        written.append(name)
    return written


def _save(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def _grid(n: int, title: str) -> tuple[plt.Figure, list[tuple[plt.Axes, plt.Axes]]]:
    """n panels, each a main axis over a small ratio axis."""
    cols = min(max(n, 1), MAX_COLS)
    rows = -(-max(n, 1) // cols)
    fig = plt.figure(figsize=(4.2 * cols, 4.2 * rows))
    subfigs = fig.subfigures(rows, cols, squeeze=False)
    panels = []
    for i in range(n):
        row, col = divmod(i, cols)
        sub = subfigs[row, col]
        ax, axr = sub.subplots(
            2, 1, sharex=True, height_ratios=[3, 1], gridspec_kw={"hspace": 0.05}
        )
        # the first row leaves room for the figure's title above the panels' titles
        sub.subplots_adjust(left=0.2, right=0.95, top=0.8 if row == 0 else 0.88, bottom=0.14)
        ax.tick_params(which="both", labelbottom=False)
        panels.append((ax, axr))
    fig.suptitle(title)
    return fig, panels


def _ratio(axr: plt.Axes, x, g, r, eg=None, er=None, span: float = 0.5) -> None:
    """gen / ref with errors; the axis widens (up to 1 +- 2) to show large deviations."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(r > 0, g / r, np.nan)
        err = None
        if eg is not None and er is not None:
            err = ratio * np.sqrt((eg / np.where(g > 0, g, np.nan)) ** 2 + (er / r) ** 2)
    axr.errorbar(x, ratio, yerr=err, fmt="o", ms=2.5, color=GEN, lw=0.8)
    axr.axhline(1.0, color=REF, lw=0.8)
    dev = np.abs(ratio[np.isfinite(ratio)] - 1.0)
    if dev.size:
        span = float(np.clip(dev.max() * 1.15, span, 2.0))
    axr.set_ylim(max(1 - span, 0.0), 1 + span)
    axr.set_ylabel("gen / ref")


def _mean_err(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a.mean(axis=0), a.std(axis=0, ddof=1) / np.sqrt(len(a))


def _sf_vs_energy(gen, ref, pairs) -> plt.Figure:
    fig, panels = _grid(2, "sampled fraction vs primary energy")
    x = np.array([np.mean(ref.energy[mr]) for _, _, mr in pairs])
    for (ax, axr), kind in zip(panels, ("mean", "resolution"), strict=True):
        vals = {}
        for label, obs, idx, color in (("gen", gen, 1, GEN), ("ref", ref, 2, REF)):
            sf = [obs.scalars["sf"][p[idx]] for p in pairs]
            if kind == "mean":
                v = np.array([s.mean() for s in sf])
                e = np.array([s.std(ddof=1) / np.sqrt(len(s)) for s in sf])
            else:
                v = np.array([s.std() / s.mean() if s.mean() > 0 else np.nan for s in sf])
                e = v / np.sqrt(2 * np.array([len(s) for s in sf]))
            vals[label] = (v, e)
            ax.errorbar(x, v, yerr=e, fmt="o-", color=color, label=label, ms=3)
        ax.set_ylabel("mean of sum(ECAL)/Ep" if kind == "mean" else "resolution (std / mean)")
        ax.set_xscale("log")
        ax.legend()
        # the sampling fraction is known to a per cent: zoom the ratio accordingly
        span = 0.1 if kind == "mean" else 0.5
        _ratio(axr, x, vals["gen"][0], vals["ref"][0], vals["gen"][1], vals["ref"][1], span)
        axr.set_xlabel("primary energy (GeV)")
        axr.set_xticks(x, [f"{v:.3g}" for v in x])
        axr.xaxis.set_minor_formatter(NullFormatter())
    return fig


def _per_bin_profile(gen, ref, pairs, attr: str, xlabel: str) -> plt.Figure:
    fig, panels = _grid(len(pairs), f"mean {xlabel} profile / Ep")
    for (b, mg, mr), (ax, axr) in zip(pairs, panels, strict=False):
        g, eg = _mean_err(getattr(gen, attr)[mg] / gen.energy[mg, None])
        r, er = _mean_err(getattr(ref, attr)[mr] / ref.energy[mr, None])
        x = np.arange(len(g))
        ax.step(x, r, where="mid", color=REF, label="ref")
        ax.errorbar(x, g, yerr=eg, fmt="o", ms=2.5, color=GEN, label="gen")
        ax.set_yscale("log")
        ax.set_title(b.label)
        ax.legend(fontsize=8)
        _ratio(axr, x, g, r, eg, er)
        axr.set_xlabel(xlabel)
    return fig


def _cell_spectrum(gen, ref, pairs) -> plt.Figure:
    edges = cell_bin_edges()
    centres = np.sqrt(edges[1:] * edges[:-1])
    fig, panels = _grid(len(pairs), "cell-energy spectrum (hit cells per shower)")
    for (b, mg, mr), (ax, axr) in zip(pairs, panels, strict=False):
        g, eg = _mean_err(gen.cell_hist[mg])
        r, er = _mean_err(ref.cell_hist[mr])
        ax.step(centres, r, where="mid", color=REF, label="ref")
        ax.errorbar(centres, g, yerr=eg, fmt="o", ms=2, color=GEN, label="gen")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(b.label)
        ax.legend(fontsize=8)
        _ratio(axr, centres, g, r, eg, er)
        filled = np.flatnonzero((g > 0) | (r > 0))
        if filled.size:  # the spectrum's range is wide; show where cells are
            ax.set_xlim(edges[max(filled[0] - 1, 0)], edges[min(filled[-1] + 2, len(edges) - 1)])
        axr.set_xlabel("cell energy (GeV)")
    return fig


def _hist_pair(ax, axr, g: np.ndarray, r: np.ndarray, xlabel: str, title: str = "") -> None:
    ax.set_title(title or xlabel)
    g, r = g[np.isfinite(g)], r[np.isfinite(r)]
    both = np.concatenate([g, r])
    if len(both) == 0:
        return
    lo, hi = np.percentile(both, [0.5, 99.5])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, 41)
    hg, _ = np.histogram(g, edges)
    hr, _ = np.histogram(r, edges)
    # normalize to the reference's count so that unequal sample sizes compare
    scale = len(r) / max(len(g), 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    ax.stairs(hr, edges, color=REF, label="ref")
    ax.errorbar(
        centres, hg * scale, yerr=np.sqrt(hg) * scale, fmt="o", ms=2, color=GEN, label="gen"
    )
    ax.legend(fontsize=8)
    _ratio(axr, centres, hg * scale, hr.astype(float), np.sqrt(hg) * scale, np.sqrt(hr))
    axr.set_xlabel(xlabel)


def _per_bin_hist(gen, ref, pairs, value, xlabel: str) -> plt.Figure:
    fig, panels = _grid(len(pairs), xlabel)
    for (b, mg, mr), (ax, axr) in zip(pairs, panels, strict=False):
        _hist_pair(ax, axr, value(gen)[mg], value(ref)[mr], xlabel, b.label)
    return fig


def _moments(gen, ref, keys) -> plt.Figure:
    fig, panels = _grid(len(keys), "shower moments, all energies (cells)")
    for key, (ax, axr) in zip(keys, panels, strict=True):
        _hist_pair(ax, axr, gen.scalars[key], ref.scalars[key], key)
    return fig
