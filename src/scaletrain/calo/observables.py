"""Per-shower observables of calorimeter images, computed in one vectorized pass.

Coordinates are in cell units: x, y, z run over cell indices 0..24 (z is the depth, layer 0 at
the front face), so a centred shower has mean x = mean y = 12.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scaletrain.errors import DataError

#: Cells with less than this energy (GeV) do not count as hits. 1e-4 GeV = 0.1 MeV is the
#: readout threshold of the data (calo-physics.md): a hit is a cell that a real readout records,
#: and the small positive values that a generator leaves in empty cells are not counted.
DEFAULT_THRESHOLD = 1e-4

#: Log10-spaced cell-energy bins (GeV) for the cell-energy spectrum: 0.1 keV to 100 GeV.
CELL_LOG10_RANGE = (-7.0, 2.0)
CELL_BINS = 72

#: Geometry used for the direction estimate: transverse cell pitch over layer depth. The CLIC
#: ECAL cells are 5.1 mm wide; a layer is taken as 1 X0 of tungsten (3.5 mm, calo-physics.md).
CELL_ASPECT = 5.1 / 3.5

#: The scalar observables, in the order of the high-level feature table.
SCALARS = (
    "esum",
    "sf",
    "hits",
    "mean_x",
    "mean_y",
    "mean_z",
    "width_x",
    "width_y",
    "width_z",
)
DIRECTION_SCALARS = ("slope_x", "slope_y", "direction")


@dataclass
class Observables:
    """Observables of N showers; every array has the showers on its first axis."""

    energy: np.ndarray  # (N,) primary energy, GeV
    scalars: dict[str, np.ndarray]  # name -> (N,); moments are NaN for empty showers
    long: np.ndarray  # (N, Z) energy per layer, GeV
    prof_x: np.ndarray  # (N, X) energy per x column, GeV
    prof_y: np.ndarray  # (N, Y)
    cell_hist: np.ndarray  # (N, CELL_BINS) counts of cells per log10 energy bin
    threshold: float = DEFAULT_THRESHOLD
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.energy)

    def subset(self, mask: np.ndarray) -> Observables:
        """The observables of the showers selected by a boolean mask or index array."""
        return Observables(
            energy=self.energy[mask],
            scalars={k: v[mask] for k, v in self.scalars.items()},
            long=self.long[mask],
            prof_x=self.prof_x[mask],
            prof_y=self.prof_y[mask],
            cell_hist=self.cell_hist[mask],
            threshold=self.threshold,
        )


def cell_bin_edges() -> np.ndarray:
    """Edges (GeV) of the cell-energy spectrum bins."""
    return np.logspace(*CELL_LOG10_RANGE, CELL_BINS + 1)


def check_showers(showers: dict) -> tuple[np.ndarray, np.ndarray]:
    """The ECAL images and primary energies of a shower dict, checked; raises DataError."""
    for key in ("ECAL", "energy"):
        if key not in showers:
            raise DataError(f"showers have no '{key}' array (keys: {sorted(showers)})")
    ecal = np.asarray(showers["ECAL"])
    energy = np.asarray(showers["energy"], dtype=np.float64).reshape(-1)
    if ecal.ndim != 4:
        raise DataError(f"ECAL must have shape (N, X, Y, Z), got {ecal.shape}")
    if len(ecal) != len(energy):
        raise DataError(f"ECAL has {len(ecal)} showers but energy has {len(energy)}")
    if len(ecal) == 0:
        raise DataError("no showers to validate")
    if not np.all(energy > 0):
        raise DataError("primary energies must be positive")
    return ecal, energy


def compute_observables(
    showers: dict, *, threshold: float = DEFAULT_THRESHOLD, chunk: int = 512
) -> Observables:
    """All observables of a shower dict ({"ECAL": (N,X,Y,Z) GeV, "energy": (N,) GeV, ...}).

    Works in chunks so that float64 temporaries stay small for large files.
    """
    ecal, energy = check_showers(showers)
    parts = [_chunk_observables(ecal[i : i + chunk], threshold) for i in range(0, len(ecal), chunk)]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    scalars = {k: cat[k] for k in (*SCALARS, *DIRECTION_SCALARS) if k != "sf"}
    scalars["sf"] = cat["esum"] / energy
    obs = Observables(
        energy=energy,
        scalars=scalars,
        long=cat["long"],
        prof_x=cat["prof_x"],
        prof_y=cat["prof_y"],
        cell_hist=cat["cell_hist"],
        threshold=threshold,
    )
    if "theta" in showers:
        obs.extra["theta"] = np.asarray(showers["theta"], dtype=np.float64).reshape(-1)
    return obs


def _chunk_observables(ecal: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    e = np.asarray(ecal, dtype=np.float64)
    # negative cells (generator noise) are clipped: energy deposits are non-negative
    e = np.clip(e, 0.0, None)
    nx, ny, nz = e.shape[1:]
    prof_x = e.sum(axis=(2, 3))
    prof_y = e.sum(axis=(1, 3))
    long = e.sum(axis=(1, 2))
    esum = long.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        moments = {}
        for name, prof, n in (("x", prof_x, nx), ("y", prof_y, ny), ("z", long, nz)):
            c = np.arange(n, dtype=np.float64)
            mean = prof @ c / esum
            var = prof @ (c**2) / esum - mean**2
            moments[f"mean_{name}"] = mean
            moments[f"width_{name}"] = np.sqrt(np.clip(var, 0.0, None))
        # direction: energy-weighted slope of x and y against depth, cov(x, z) / var(z)
        cx = np.arange(nx, dtype=np.float64)
        cy = np.arange(ny, dtype=np.float64)
        cz = np.arange(nz, dtype=np.float64)
        exz = np.einsum("nxyz,x,z->n", e, cx, cz) / esum
        eyz = np.einsum("nxyz,y,z->n", e, cy, cz) / esum
        var_z = moments["width_z"] ** 2
        slope_x = (exz - moments["mean_x"] * moments["mean_z"]) / var_z
        slope_y = (eyz - moments["mean_y"] * moments["mean_z"]) / var_z
    direction = np.arctan(np.hypot(slope_x, slope_y) * CELL_ASPECT)
    hit = e > threshold
    return {
        "esum": esum,
        "hits": hit.sum(axis=(1, 2, 3)).astype(np.float64),
        **moments,
        "slope_x": slope_x,
        "slope_y": slope_y,
        "direction": direction,
        "long": long,
        "prof_x": prof_x,
        "prof_y": prof_y,
        "cell_hist": _cell_hist(e, hit),
    }


def _cell_hist(e: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Per-shower counts of hit cells in log10 energy bins (under/overflow in the end bins)."""
    lo, hi = CELL_LOG10_RANGE
    idx_shower, *_ = np.nonzero(hit)
    vals = np.log10(e[hit])
    b = np.clip(((vals - lo) / (hi - lo) * CELL_BINS).astype(np.int64), 0, CELL_BINS - 1)
    flat = np.bincount(idx_shower * CELL_BINS + b, minlength=len(e) * CELL_BINS)
    return flat.reshape(len(e), CELL_BINS).astype(np.float64)
