"""Throughput of the shower simulator: showers per second, in total and per core."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from scaletrain.data.simulator import SimConfig, simulate_showers


@dataclass(frozen=True)
class SimBenchResult:
    particle: str
    energy_gev: float
    n: int
    workers: int
    spots: str
    seconds: float
    showers_per_s: float
    showers_per_s_per_core: float
    cpu_count: int

    def to_dict(self) -> dict:
        return asdict(self)


def bench_simulation(
    energy: float = 100.0,
    n: int = 2000,
    *,
    workers: int = 1,
    particle: str = "e-",
    config: SimConfig = SimConfig(),
    seed: int = 0,
) -> SimBenchResult:
    """Time simulate_showers(n) after a short warm-up; the time includes worker start-up."""
    simulate_showers(min(n, 64), energy, particle=particle, seed=seed + 1, config=config)
    start = time.perf_counter()
    simulate_showers(n, energy, particle=particle, seed=seed, config=config, workers=workers)
    seconds = time.perf_counter() - start
    rate = n / seconds
    return SimBenchResult(
        particle=particle,
        energy_gev=energy,
        n=n,
        workers=workers,
        spots=config.spots,
        seconds=round(seconds, 4),
        showers_per_s=round(rate, 1),
        showers_per_s_per_core=round(rate / max(workers, 1), 1),
        cpu_count=os.cpu_count() or 1,
    )
