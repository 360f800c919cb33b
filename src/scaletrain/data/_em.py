"""Electromagnetic showers (electrons, photons) as spot plans for a block of showers."""

from __future__ import annotations

import numpy as np

from . import _gflash
from ._spots import SpotPlan
from .simconfig import SimConfig


def depth_edges(theta: np.ndarray, config: SimConfig) -> np.ndarray:
    """Bin edges (X0) along the shower axis, long enough to cross the detector at any θ."""
    geo = config.geometry
    # a tilted axis needs a longer path to the back face; beyond 4× it is leakage anyway
    sin_min = max(float(np.min(np.sin(theta))) if theta.size else 1.0, 0.25)
    n_bins = int(np.ceil(geo.depth_x0 / sin_min / config.step_x0))
    return np.arange(n_bins + 1) * config.step_x0


def em_plan(
    energy: np.ndarray,
    theta: np.ndarray,
    start_x0: np.ndarray,
    config: SimConfig,
    rng: np.random.Generator,
) -> tuple[SpotPlan, np.ndarray]:
    """The spot plan of EM showers of `energy` GeV starting at `start_x0` along the axis.

    Returns the plan and a per-shower factor on the total: 1, or in "gflash" spot mode the
    Gaussian sampling fluctuation that its (many, equal) spots do not carry.
    """
    geo = config.geometry
    t_max, alpha = _gflash.sample_profile_parameters(energy, geo.z, geo.ec_gev, rng)
    t_spot, alpha_spot = _gflash.spot_profile_parameters(t_max, alpha, geo.z)
    edges = depth_edges(theta, config)
    frac = _gflash.profile_fractions(t_max, alpha, edges)
    spot_frac = _gflash.profile_fractions(t_spot, alpha_spot, edges)

    a2 = config.stochastic_term**2
    if config.spots == "sampling":
        # Compound Poisson: N spots with Gamma(k) energies give a relative variance of
        # (1 + 1/k) / N × Σ f²/s on the total (f, s: energy and spot fractions per bin), so
        # this N makes the total fluctuate by exactly a/√E, the sampling term
        k = config.spot_energy_shape
        with np.errstate(divide="ignore", invalid="ignore"):
            mismatch = np.sum(np.where(spot_frac > 0, frac**2 / spot_frac, 0.0), axis=1)
        n_spots = (1.0 + 1.0 / k) * energy / a2 * np.maximum(mismatch, 1.0)
        spot_shape: float | None = k
        total_factor = np.ones_like(energy)
    else:
        n_spots = _gflash.gflash_spot_count(energy, geo.z)
        spot_shape = None
        smear = rng.standard_normal(energy.shape) * np.sqrt(a2 / energy)
        total_factor = np.maximum(1.0 + smear, 0.0)

    centres = 0.5 * (edges[:-1] + edges[1:])
    rc, rt, p = _gflash.radial_parameters(centres[None, :] / t_max[:, None], energy[:, None], geo.z)
    plan = SpotPlan(
        energy=energy[:, None] * frac,
        expected=n_spots[:, None] * spot_frac,
        rc=rc,
        rt=rt,
        p=p,
        start_x0=start_x0,
        cos_theta=np.cos(theta),
        sin_theta=np.sin(theta),
        step_x0=config.step_x0,
        spot_shape=spot_shape,
    )
    return plan, total_factor
