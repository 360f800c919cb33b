"""Compare generated with reference showers: the package's public entry points."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scaletrain.errors import DataError

from . import scores as sc
from . import twosample
from .binning import EnergyBin, resolve_bins
from .observables import DEFAULT_THRESHOLD, Observables, compute_observables


@dataclass
class ValidationResult:
    """Scores (nested dict, JSON-ready), the overall fidelity and the observables behind them."""

    scores: dict
    fidelity: float
    observables: dict[str, Observables]
    bins: list[EnergyBin] = field(default_factory=list)
    report_dir: Path | None = None


def compare(
    generated: dict,
    reference: dict,
    *,
    energy_bins=None,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
) -> ValidationResult:
    """Score generated showers against reference showers, per energy bin and overall.

    energy_bins: bin edges in GeV, or None for automatic bins (one per energy for
    fixed-energy references, else 2-10-50-100-200-300-400-500 GeV). See scores.py for the
    meaning of every score and the fidelity formula.
    """
    gen = compute_observables(generated, threshold=threshold)
    ref = compute_observables(reference, threshold=threshold)
    bins = resolve_bins(energy_bins, ref.energy)
    direction = sc.angle_varies(ref)

    fg, names = sc.features(gen, direction=direction)
    fr, _ = sc.features(ref, direction=direction)
    zg, zr = twosample.standardize(fg, fr)
    out_g, out_r = twosample.classifier_scores(zg, zr, seed=seed)

    def scored(mask_g, mask_r) -> dict:
        s = sc.bin_scores(gen.subset(mask_g), ref.subset(mask_r), direction=direction)
        s["auc"] = twosample.auc(out_g[mask_g], out_r[mask_r])
        s["frechet"] = twosample.frechet_distance(zg[mask_g], zr[mask_r])
        s["fidelity"] = sc.binned_terms(s) + sc.classifier_terms(s["auc"], s["frechet"], len(names))
        return s

    per_bin: dict[str, dict] = {}
    binned, weights = [], []
    for b in bins:
        mg, mr = b.mask(gen.energy), b.mask(ref.energy)
        if min(mg.sum(), mr.sum()) < sc.MIN_SHOWERS:
            per_bin[b.label] = {"n_gen": int(mg.sum()), "n_ref": int(mr.sum()), "skipped": True}
            continue
        per_bin[b.label] = s = scored(mg, mr)
        s.update(energy_lo=b.lo, energy_hi=b.hi, skipped=False)
        binned.append(sc.binned_terms(s))
        weights.append(mr.sum())
    if not binned:
        raise DataError(
            f"no energy bin has {sc.MIN_SHOWERS} or more showers in both samples "
            f"(bins: {', '.join(b.label for b in bins)})"
        )
    everything = scored(np.ones(len(gen), bool), np.ones(len(ref), bool))
    # bins weighted by their share of the reference, so sparse bins do not dominate the noise
    fidelity = float(np.average(binned, weights=weights)) + sc.classifier_terms(
        everything["auc"], everything["frechet"], len(names)
    )
    everything["fidelity"] = fidelity
    scores = {
        "fidelity": fidelity,
        "overall": everything,
        "bins": per_bin,
        "settings": {
            "threshold_gev": threshold,
            "seed": seed,
            "energy_bins": [[b.lo, b.hi] for b in bins],
            "features": names,
            "direction_scored": direction,
            "weights": dict(sc.WEIGHTS),
        },
    }
    return ValidationResult(scores, fidelity, {"generated": gen, "reference": ref}, bins)


def fidelity_score(generated: dict, reference: dict, **kw) -> float:
    """The scalar fidelity of `compare` (lower is better); a few seconds for 2k showers."""
    return compare(generated, reference, **kw).fidelity


def validate_files(
    generated_path,
    reference_path,
    report_dir=None,
    *,
    energy_bins=None,
    max_showers: int | None = None,
    overwrite: bool = False,
    seed: int = 0,
) -> ValidationResult:
    """Compare two shower files (or directories / globs of files, as `expand_paths` takes);
    with report_dir, write the report (plots, scores) there."""
    from . import report

    if report_dir is not None:
        # fail before the expensive part if the report could not be written
        report.check_report_dir(report_dir, overwrite=overwrite)
    showers = [load_showers(p, max_showers) for p in (generated_path, reference_path)]
    result = compare(showers[0], showers[1], energy_bins=energy_bins, seed=seed)
    result.scores["settings"]["generated"] = str(generated_path)
    result.scores["settings"]["reference"] = str(reference_path)
    if report_dir is not None:
        result.report_dir = report.write_report(result, report_dir, overwrite=overwrite)
    return result


def load_showers(spec, max_showers: int | None = None) -> dict:
    """Showers of the files named by spec, checked, up to max_showers in all; DataError."""
    from scaletrain.data import io

    parts, left = [], max_showers
    for path in io.expand_paths(spec):
        if left is not None and left <= 0:
            break
        info = io.check_file(path)
        parts.append(io.read_showers(path, 0, None if left is None else min(left, info.n)))
        if left is not None:
            left -= len(parts[-1]["ECAL"])
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
