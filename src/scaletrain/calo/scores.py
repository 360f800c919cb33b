"""Scores comparing generated with reference observables, per energy bin, and `fidelity`.

fidelity (lower is better, 0 for identical distributions in the limit of many showers) is

    fidelity = sum over energy bins b of  w_b [ W + TV_long + (TV_x + TV_y) / 2 + |dSF| + |ln R| ]
               + 2 |AUC - 0.5| + FD / d

w_b: the bin's share of the (binned) reference showers;
W: mean normalized 1-D Wasserstein distance of the shower observables (WASSERSTEIN_KEYS);
TV: total-variation distance of the mean normalized profiles, 0.5 sum |p_gen - p_ref|;
dSF: relative error of the mean sampled fraction sum(ECAL)/Ep; R: resolution ratio;
AUC: held-out AUC of the classifier two-sample test; FD / d: Fréchet distance of the
standardized high-level features per feature. A per-bin fidelity uses the same formula with
the bin's own AUC and FD.
"""

from __future__ import annotations

import numpy as np

from . import twosample
from .binning import EnergyBin
from .observables import CELL_BINS, CELL_LOG10_RANGE, Observables

#: Observables whose normalized Wasserstein distances enter W (direction ones are added when
#: the shower angle varies).
WASSERSTEIN_KEYS = (
    "sf",
    "hits",
    "mean_x",
    "mean_y",
    "mean_z",
    "width_x",
    "width_y",
    "width_z",
    "cell_energy",
)
MOMENT_KEYS = ("mean_x", "mean_y", "mean_z", "width_x", "width_y", "width_z")
#: Longitudinal fractions enter the classifier in groups of this many layers.
LAYER_GROUP = 5
#: A bin needs at least this many showers in each sample to be scored.
MIN_SHOWERS = 10
#: Fixed weights of the terms of `fidelity`.
WEIGHTS = {
    "wasserstein": 1.0,
    "tv_long": 1.0,
    "tv_transverse": 0.5,
    "sf_rel_error": 1.0,
    "log_resolution_ratio": 1.0,
    "auc": 2.0,
    "frechet_per_feature": 1.0,
}


def features(obs: Observables, *, direction: bool = False) -> tuple[np.ndarray, list[str]]:
    """High-level features (N, d) for the classifier and the Fréchet distance, and their names.

    The primary energy is a feature, so the classifier compares showers at the same energy.
    """
    s = obs.scalars
    cols = {
        "log_energy": np.log(obs.energy),
        "sf": s["sf"],
        "log_hits": np.log1p(s["hits"]),
        **{k: s[k] for k in MOMENT_KEYS},
    }
    nz = obs.long.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(0, nz, LAYER_GROUP):
            cols[f"frac_z{i}"] = obs.long[:, i : i + LAYER_GROUP].sum(axis=1) / s["esum"]
    if direction:
        cols["slope_x"], cols["slope_y"] = s["slope_x"], s["slope_y"]
    return np.column_stack(list(cols.values())), list(cols)


def angle_varies(obs: Observables) -> bool:
    """Whether the reference showers come at different angles (then direction is scored)."""
    theta = obs.extra.get("theta")
    return theta is not None and float(np.ptp(theta)) > 1e-3


def bin_scores(gen: Observables, ref: Observables, *, direction: bool = False) -> dict:
    """Scores of one set of showers (a bin or all): everything but the classifier terms."""
    out: dict = {"n_gen": len(gen), "n_ref": len(ref)}
    sg, sr = gen.scalars, ref.scalars
    sf_g, sf_r = float(np.mean(sg["sf"])), float(np.mean(sr["sf"]))
    res_g = float(np.std(sg["sf"]) / sf_g) if sf_g > 0 else float("nan")
    res_r = float(np.std(sr["sf"]) / sf_r)
    out.update(
        sf_mean_gen=sf_g,
        sf_mean_ref=sf_r,
        sf_rel_error=sf_g / sf_r - 1.0,
        resolution_gen=res_g,
        resolution_ref=res_r,
        resolution_ratio=res_g / res_r if res_r > 0 else float("nan"),
        hits_mean_gen=float(np.mean(sg["hits"])),
        hits_mean_ref=float(np.mean(sr["hits"])),
    )
    out["moments_rel_error"] = {
        k: float(np.nanmean(sg[k]) / np.nanmean(sr[k]) - 1.0) for k in MOMENT_KEYS
    }
    out["moments_mean_gen"] = {k: float(np.nanmean(sg[k])) for k in MOMENT_KEYS}
    out["moments_mean_ref"] = {k: float(np.nanmean(sr[k])) for k in MOMENT_KEYS}
    profiles = {
        "long": (gen.long, ref.long),
        "x": (gen.prof_x, ref.prof_x),
        "y": (gen.prof_y, ref.prof_y),
    }
    out["chi2_ndf"] = {
        name: profile_chi2(g / gen.energy[:, None], r / ref.energy[:, None])
        for name, (g, r) in profiles.items()
    }
    with np.errstate(invalid="ignore", divide="ignore"):
        out["chi2_ndf"]["long_shape"] = profile_chi2(
            gen.long / sg["esum"][:, None], ref.long / sr["esum"][:, None]
        )
    out["chi2_ndf"]["cell_spectrum"] = profile_chi2(gen.cell_hist, ref.cell_hist)
    out["profile_tv"] = {name: profile_tv(g, r) for name, (g, r) in profiles.items()}
    keys = [*WASSERSTEIN_KEYS, *(("direction",) if direction else ())]
    centres = cell_log10_centres()
    out["wasserstein"] = {
        k: (
            twosample.wasserstein_hist(gen.cell_hist.sum(0), ref.cell_hist.sum(0), centres)
            if k == "cell_energy"
            else twosample.wasserstein_normalized(sg[k], sr[k])
        )
        for k in keys
    }
    out["wasserstein_mean"] = float(np.nanmean(list(out["wasserstein"].values())))
    return out


def binned_terms(s: dict) -> float:
    """The energy-binned part of fidelity for one bin's scores."""
    w = WEIGHTS
    tv = s["profile_tv"]
    ratio = s["resolution_ratio"]
    log_ratio = abs(np.log(ratio)) if ratio > 0 else 10.0  # empty generator: heavy penalty
    return float(
        w["wasserstein"] * s["wasserstein_mean"]
        + w["tv_long"] * tv["long"]
        + w["tv_transverse"] * (tv["x"] + tv["y"])
        + w["sf_rel_error"] * abs(s["sf_rel_error"])
        + w["log_resolution_ratio"] * log_ratio
    )


def classifier_terms(auc: float, frechet: float, n_features: int) -> float:
    """The classifier and Fréchet part of fidelity."""
    w = WEIGHTS
    return float(w["auc"] * abs(auc - 0.5) + w["frechet_per_feature"] * frechet / n_features)


def profile_chi2(gen: np.ndarray, ref: np.ndarray) -> float:
    """chi2 / ndf of two mean profiles (N, bins), with the standard errors of both means.

    Showers with NaN entries (empty ones, for normalized profiles) are left out; bins where
    both samples are empty carry no information and do not count as degrees of freedom.
    """
    g = gen[np.all(np.isfinite(gen), axis=1)]
    r = ref[np.all(np.isfinite(ref), axis=1)]
    if len(g) < 2 or len(r) < 2:
        return float("nan")
    var = g.var(axis=0, ddof=1) / len(g) + r.var(axis=0, ddof=1) / len(r)
    diff2 = (g.mean(axis=0) - r.mean(axis=0)) ** 2
    ok = var > 0
    if not ok.any():
        return 0.0
    return float((diff2[ok] / var[ok]).sum() / ok.sum())


def profile_tv(gen: np.ndarray, ref: np.ndarray) -> float:
    """Total-variation distance 0.5 sum |p_gen - p_ref| of the normalized mean profiles."""
    mg, mr = gen.mean(axis=0), ref.mean(axis=0)
    if mg.sum() <= 0 or mr.sum() <= 0:
        return 1.0
    return float(0.5 * np.abs(mg / mg.sum() - mr / mr.sum()).sum())


def cell_log10_centres() -> np.ndarray:
    lo, hi = CELL_LOG10_RANGE
    step = (hi - lo) / CELL_BINS
    return lo + step * (np.arange(CELL_BINS) + 0.5)


def bin_key(b: EnergyBin) -> str:
    return b.label
