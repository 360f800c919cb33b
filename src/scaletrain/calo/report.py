"""The validation report: report.md, report.html, scores.json and the PNG plots in one dir."""

from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from scaletrain.errors import RunDirError

from . import plots

#: Columns of the per-bin table: (header, function of a bin's scores).
COLUMNS = (
    ("energy bin", None),
    ("n gen / ref", lambda s: f"{s['n_gen']} / {s['n_ref']}"),
    ("SF gen", lambda s: f"{s['sf_mean_gen']:.5f}"),
    ("SF ref", lambda s: f"{s['sf_mean_ref']:.5f}"),
    ("SF rel. err.", lambda s: f"{s['sf_rel_error']:+.2%}"),
    ("resolution ratio", lambda s: f"{s['resolution_ratio']:.3f}"),
    ("chi2/ndf long", lambda s: f"{s['chi2_ndf']['long']:.2f}"),
    ("W mean", lambda s: f"{s['wasserstein_mean']:.3f}"),
    ("AUC", lambda s: f"{s['auc']:.3f}"),
    ("fidelity", lambda s: f"{s['fidelity']:.3f}"),
)


def check_report_dir(report_dir, *, overwrite: bool = False) -> Path:
    """The report directory; RunDirError if it is a file, or holds files and not overwrite."""
    path = Path(report_dir)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"report path {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunDirError(f"report directory {path} is not empty (use --overwrite to replace)")
    return path


def write_report(result, report_dir, *, overwrite: bool = False) -> Path:
    """Write plots, scores.json, report.md and report.html; returns the directory."""
    path = check_report_dir(report_dir, overwrite=overwrite)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create report directory {path}: {exc.strerror}") from exc
    obs = result.observables
    images = plots.write_plots(
        obs["generated"],
        obs["reference"],
        result.bins,
        path,
        direction=result.scores["settings"]["direction_scored"],
    )
    rows = table_rows(result.scores)
    _write(path / "scores.json", json.dumps(_jsonable(result.scores), indent=2) + "\n")
    _write(path / "report.md", _markdown(result.scores, rows, images))
    _write(path / "report.html", _html(result.scores, rows, images))
    return path


def table_rows(scores: dict) -> list[list[str]]:
    """The per-bin table (and an 'all' row) as strings; skipped bins say so."""
    rows = []
    items = [*scores["bins"].items(), ("all energies", scores["overall"])]
    for label, s in items:
        if s.get("skipped"):
            rows.append([label, f"{s['n_gen']} / {s['n_ref']}"] + ["too few"] * (len(COLUMNS) - 2))
            continue
        rows.append([label] + [fmt(s) for _, fmt in COLUMNS[1:]])
    return rows


def _markdown(scores: dict, rows: list[list[str]], images: list[str]) -> str:
    st = scores["settings"]
    lines = [
        "# Shower validation report",
        "",
        f"**fidelity = {scores['fidelity']:.4f}** (lower is better; 0 = indistinguishable)",
        "",
        f"- generated: `{st.get('generated', '-')}`",
        f"- reference: `{st.get('reference', '-')}`",
        f"- hit threshold: {st['threshold_gev']:g} GeV; seed {st['seed']}",
        "",
        "| " + " | ".join(h for h, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "All numbers are in scores.json.",
        "",
    ]
    lines += [f"![{name}]({name})\n" for name in images]
    return "\n".join(lines)


def _html(scores: dict, rows: list[list[str]], images: list[str]) -> str:
    st = scores["settings"]
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    figs = "".join(
        f'<figure><img src="{esc(n)}" alt="{esc(n)}"><figcaption>{esc(n)}</figcaption></figure>'
        for n in images
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Shower validation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #bbb; padding: 3px 8px; }}
td {{ text-align: right; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Shower validation report</h1>
<p><b>fidelity = {scores["fidelity"]:.4f}</b> (lower is better; 0 = indistinguishable)</p>
<p>generated: <code>{esc(str(st.get("generated", "-")))}</code><br>
reference: <code>{esc(str(st.get("reference", "-")))}</code><br>
hit threshold: {st["threshold_gev"]:g} GeV; seed {st["seed"]}</p>
<table><tr>{head}</tr>{body}</table>
<p>All numbers are in <a href="scores.json">scores.json</a>.</p>
{figs}
</body></html>
"""


def _jsonable(x):
    """Scores with NaN and infinities as null (strict JSON) and numpy scalars as floats."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, bool | str) or x is None:
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
