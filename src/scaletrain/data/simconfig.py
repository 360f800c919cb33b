"""Detector geometry and simulator settings: frozen dataclasses, every number a parameter."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from scaletrain.errors import ConfigError

PDG = {"e-": 11, "gamma": 22, "pi+": 211}


@dataclass(frozen=True)
class Geometry:
    """A box of n_x × n_y × n_z cells; the particle enters at the centre of the front face.

    Depth is counted in radiation lengths of the (effective) absorber, the transverse
    directions in mm; X0 and the Molière radius of the material connect the two.
    """

    n_x: int = 25
    n_y: int = 25
    n_z: int = 25
    cell_mm: float = 5.1  # transverse cell size
    layer_x0: float = 1.0  # absorber per layer, in X0
    z: float = 74.0  # tungsten
    a: float = 183.84
    x0_mm: float = 3.5
    ec_gev: float = 0.008  # critical energy
    moliere_mm: float = 9.3
    lambda_int_mm: float = 99.0  # nuclear interaction length (pions only)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n_x, self.n_y, self.n_z)

    @property
    def depth_x0(self) -> float:
        return self.n_z * self.layer_x0


@dataclass(frozen=True)
class SimConfig:
    """Everything that defines the simulated showers besides energy, angle, particle and seed."""

    geometry: Geometry = field(default_factory=Geometry)
    # deposited (silicon) over absorbed energy: f0 · (1 − slope · ln(E / 100 GeV))
    sampling_fraction: float = 0.02
    sampling_slope: float = 0.005
    stochastic_term: float = 0.17  # σ/E = a/√(E/GeV) of the sampling fluctuations
    noise_gev: float = 1e-5  # Gaussian cell noise (0.01 MeV)
    threshold_gev: float = 1e-4  # deposited energy below which a cell reads zero (0.1 MeV)
    # "sampling": Poisson-distributed spots whose count carries the sampling fluctuations
    # (N = (1 + 1/k) E / a², see simulator docs); "gflash": N = 93 ln(Z) E^0.876 equal spots
    # plus a global Gaussian smearing of the total (the reference, several times slower)
    spots: str = "sampling"
    spot_energy_shape: float = 2.0  # k of the Gamma(k) spread of spot energies ("sampling")
    step_x0: float = 0.5  # longitudinal integration step along the shower axis
    block_size: int = 128  # showers per RNG block: fixes which random numbers each shower gets

    def __post_init__(self) -> None:
        if self.spots not in ("sampling", "gflash"):
            raise ConfigError(f"spots must be 'sampling' or 'gflash', not {self.spots!r}")
        if not (self.spot_energy_shape > 0 and self.step_x0 > 0 and self.block_size > 0):
            raise ConfigError("spot_energy_shape, step_x0 and block_size must be positive")
        if not 0 < self.sampling_fraction <= 1:
            raise ConfigError(f"sampling_fraction must be in (0, 1], not {self.sampling_fraction}")

    def sampling_fraction_at(self, energy: np.ndarray | float) -> np.ndarray:
        """The mean deposited fraction at primary energy `energy` (GeV)."""
        return self.sampling_fraction * (1.0 - self.sampling_slope * np.log(energy / 100.0))

    def to_dict(self) -> dict:
        return asdict(self)


def pdg_of(particle: str) -> int:
    """The PDG code of a particle name; ConfigError naming the allowed names."""
    try:
        return PDG[particle]
    except KeyError:
        raise ConfigError(
            f"unknown particle {particle!r}; choose one of {', '.join(PDG)}"
        ) from None
