"""Charged pions: a deliberately crude parametrization, far less faithful than the EM one.

A pion leaves a minimum-ionizing track along its axis until a nuclear interaction at an
exponential depth (interaction length λ, ~0.9 λ over the detector, so ~40 % pass through as
MIPs). At the interaction point a hadronic shower starts: a fluctuating fraction f_em of the
energy (mean 1 − E^(k−1), Wigmans, k = 0.82) makes an EM shower with the GFlash profile; the
rest is seen at h/e = 0.6 with a wide gamma profile in units of λ and a broad lateral profile,
and with coarse spots (50 %/√E stochastic term). Good enough for data-handling, throughput and
classifier tests; not for physics studies of hadrons.
"""

from __future__ import annotations

import numpy as np

from . import _gflash
from ._em import depth_edges, em_plan
from ._spots import SpotPlan, deposit_spots
from .simconfig import SimConfig

MIP_GEV_PER_X0 = 0.0077  # dE/dx of a MIP in tungsten times X0: 0.19 GeV over 25 X0
MIP_SPOTS_PER_X0 = 4.0  # Poisson sub-deposits: ~50 % fluctuation per layer, Landau-like
EM_FRACTION_K = 0.82
EM_FRACTION_CONCENTRATION = 5.0  # Beta(c·m, c·(1−m)): event-to-event f_em spread
H_OVER_E = 0.6
HADRON_STOCHASTIC = 0.5
HADRON_RC, HADRON_RT, HADRON_P = 0.8, 3.0, 0.5  # Molière radii; hadron showers are wide


def deposit_pions(
    images: np.ndarray,
    energy: np.ndarray,
    theta: np.ndarray,
    config: SimConfig,
    rng: np.random.Generator,
) -> None:
    """Add the absorbed energy of pions to the flat accumulators `images`."""
    geo = config.geometry
    m = energy.size
    lambda_x0 = geo.lambda_int_mm / geo.x0_mm
    t_int = rng.exponential(lambda_x0, m)
    edges = depth_edges(theta, config)
    lo, step = edges[:-1], config.step_x0
    shape = (m, lo.size)
    common = {"cos_theta": np.cos(theta), "sin_theta": np.sin(theta), "step_x0": step}

    # the track, up to the interaction point
    before = np.clip((t_int[:, None] - lo[None, :]) / step, 0.0, 1.0)
    track = SpotPlan(
        energy=MIP_GEV_PER_X0 * step * before,
        expected=MIP_SPOTS_PER_X0 * step * before,
        rc=np.zeros(shape), rt=np.zeros(shape), p=np.ones(shape),
        start_x0=np.zeros(m), spot_shape=None, **common,
    )  # fmt: skip
    deposit_spots(images, track, geo, rng)

    interacts = t_int < edges[-1]
    shower_energy = np.where(interacts, np.maximum(energy - MIP_GEV_PER_X0 * t_int, 0.0), 0.0)
    mean_em = 1.0 - np.maximum(energy, 1.0) ** (EM_FRACTION_K - 1.0)
    c = EM_FRACTION_CONCENTRATION
    f_em = rng.beta(c * mean_em, c * (1.0 - mean_em))

    # EM part: GFlash shapes need E ≳ 1 GeV, so shape at ≥ 1 GeV and scale the amounts
    em_energy = f_em * shower_energy
    shape_energy = np.maximum(em_energy, 1.0)
    em, _ = em_plan(shape_energy, theta, t_int, config, rng)
    scale = (em_energy / shape_energy)[:, None]
    em.energy = em.energy * scale
    em.expected = em.expected * scale
    deposit_spots(images, em, geo, rng)

    # non-EM part: gamma profile with its maximum at (0.2 ln E + 0.7) λ after the interaction
    visible = (1.0 - f_em) * shower_energy * H_OVER_E
    t_max = (0.2 * np.log(np.maximum(energy, 1.0)) + 0.7) * lambda_x0
    alpha = np.exp(np.log(2.5) + 0.3 * rng.standard_normal(m)).clip(1.2)
    frac = _gflash.profile_fractions(t_max, alpha, edges)
    n_spots = 1.5 * visible / HADRON_STOCHASTIC**2  # Gamma(2) spot energies: (1 + 1/2)
    hadron = SpotPlan(
        energy=visible[:, None] * frac,
        expected=n_spots[:, None] * frac,
        rc=np.full(shape, HADRON_RC), rt=np.full(shape, HADRON_RT), p=np.full(shape, HADRON_P),
        start_x0=t_int, spot_shape=2.0, **common,
    )  # fmt: skip
    deposit_spots(images, hadron, geo, rng)
