"""Deposit showers into the cell grid as energy spots, a whole block of showers at once.

A shower component is described per (shower, depth bin along its axis): the absorbed energy in
the bin, the expected number of spots there, and the radial profile (Rc, Rt, p) at the bin.
Spot counts are Poisson, every spot gets a depth inside its bin, a radius from f(r), a uniform
azimuth, and is binned with one np.bincount over flat cell indices of the whole block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .simconfig import Geometry

_F32 = np.float32


@dataclass
class SpotPlan:
    """One shower component of a block; arrays of shape (showers, bins) unless noted."""

    energy: np.ndarray  # absorbed energy per bin, GeV
    expected: np.ndarray  # expected spot count per bin
    rc: np.ndarray  # core radius, Molière radii
    rt: np.ndarray  # tail radius, Molière radii
    p: np.ndarray  # core probability
    start_x0: np.ndarray  # (showers,) depth along the axis where the component starts
    cos_theta: np.ndarray  # (showers,)
    sin_theta: np.ndarray  # (showers,)
    step_x0: float  # bin width along the axis
    spot_shape: float | None  # Gamma(k) spread of spot energies; None: equal energies


def empty_images(n: int, geometry: Geometry) -> np.ndarray:
    """Flat float64 accumulators, one spare cell at the end for spots outside the grid."""
    return np.zeros(n * int(np.prod(geometry.shape)) + 1)


def deposit_spots(
    images: np.ndarray, plan: SpotPlan, geometry: Geometry, rng: np.random.Generator
) -> None:
    """Add the spots of `plan` to the flat accumulators `images` (see empty_images)."""
    n_showers, n_bins = plan.energy.shape
    counts = rng.poisson(plan.expected).ravel()
    # the mean spot energy of a bin is its energy over its *expected* count, so that the
    # Poisson spot count carries the fluctuations and the mean stays exact
    with np.errstate(divide="ignore", invalid="ignore"):
        spot_energy = np.where(plan.expected > 0, plan.energy / plan.expected, 0.0)
    cell_bin = np.repeat(np.arange(n_showers * n_bins, dtype=np.intp), counts)
    n = cell_bin.size
    if n == 0:
        return
    shower = np.repeat(np.arange(n_showers, dtype=np.intp), counts.reshape(n_showers, -1).sum(1))
    depth_bin = (cell_bin - shower * n_bins).astype(_F32)

    # depth along the axis (mm), uniform inside the bin
    t_mm = (depth_bin + rng.random(n, dtype=_F32)) * _F32(plan.step_x0)
    if np.any(plan.start_x0):
        t_mm += plan.start_x0.astype(_F32)[shower]
    t_mm *= _F32(geometry.x0_mm)

    # radius from f(r): core with probability p, else tail; r = R sqrt(v / (1 - v)). One
    # uniform u serves both choices: given the branch, u rescaled to [0, 1) is uniform again.
    u = rng.random(n, dtype=_F32)
    p = plan.p.astype(_F32).ravel()[cell_bin]
    is_tail = u >= p
    v = np.where(is_tail, (u - p) / (_F32(1) - p + _F32(1e-12)), u / (p + _F32(1e-12)))
    radii = np.stack([plan.rc.ravel(), plan.rt.ravel()], axis=1).astype(_F32).ravel()
    r_mm = radii[2 * cell_bin + is_tail]
    r_mm *= np.sqrt(v / (_F32(1 + 1e-6) - v)) * _F32(geometry.moliere_mm)
    phi = rng.random(n, dtype=_F32) * _F32(2 * np.pi)
    a = r_mm * np.cos(phi)  # in the x–z plane, perpendicular to the axis
    y = r_mm * np.sin(phi)

    # the axis runs along (cos θ, 0, sin θ); θ = π/2 is perpendicular incidence
    if np.all(plan.sin_theta == 1.0):
        x, z = a, t_mm
    else:
        cos_t = plan.cos_theta.astype(_F32)[shower]
        sin_t = plan.sin_theta.astype(_F32)[shower]
        x = t_mm * cos_t + a * sin_t
        z = t_mm * sin_t - a * cos_t

    inv_cell = _F32(1.0 / geometry.cell_mm)
    inv_layer = _F32(1.0 / (geometry.layer_x0 * geometry.x0_mm))
    ix = np.floor(x * inv_cell + _F32(geometry.n_x / 2)).astype(np.int32)
    iy = np.floor(y * inv_cell + _F32(geometry.n_y / 2)).astype(np.int32)
    iz = np.floor(z * inv_layer).astype(np.int32)
    inside = (
        (ix >= 0) & (ix < geometry.n_x) & (iy >= 0) & (iy < geometry.n_y)
        & (iz >= 0) & (iz < geometry.n_z)
    )  # fmt: skip
    flat = ((shower * geometry.n_x + ix) * geometry.n_y + iy) * geometry.n_z + iz
    flat = np.where(inside, flat, images.size - 1)  # the spare last cell collects the outside

    weights = spot_energy.astype(_F32).ravel()[cell_bin]
    if plan.spot_shape is not None:
        weights *= _unit_gamma(plan.spot_shape, n, rng)
    # float64 weights: np.bincount converts float32 ones element by element, ~8× slower
    images += np.bincount(flat, weights=weights.astype(np.float64), minlength=images.size)


def _unit_gamma(k: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Gamma(k) variates of mean 1; integer k as a sum of exponentials (4× faster)."""
    if k == int(k) and k <= 4:
        out = rng.standard_exponential(n, dtype=_F32)
        for _ in range(int(k) - 1):
            out += rng.standard_exponential(n, dtype=_F32)
    else:
        out = rng.standard_gamma(k, n, dtype=_F32)
    out *= _F32(1.0 / k)
    return out
