"""Samplers on analytic functions: evaluations needed to reach a target, averaged over seeds.

No training: each "trial" is one evaluation of a closed-form function, so the benchmark
measures only how well a sampler searches (the evolutionary sampler against random search,
or any other).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import optuna

from scaletrain.config import SearchConfig
from scaletrain.hpo.samplers import make_sampler


def sphere(x: np.ndarray) -> float:
    return float(np.sum((x - 1.0) ** 2))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], float], float, float]] = {
    # name: (function, bound of the box [-b, b]^d, default target)
    "sphere": (sphere, 5.0, 0.1),
    "rosenbrock": (rosenbrock, 2.0, 5.0),
}


@dataclass
class SamplerRow:
    sampler: str
    reached: int  # seeds that reached the target within the budget
    seeds: int
    evals_to_target: float  # mean over seeds; a seed that never reached it counts the budget
    best_median: float
    best_values: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class BenchResult:
    function: str
    dim: int
    budget: int
    target: float
    rows: list[SamplerRow]

    def to_dict(self) -> dict:
        return asdict(self)


def run_sampler(
    name: str, function: str, dim: int, budget: int, target: float, seed: int, **evolution
) -> tuple[int | None, float]:
    """(evaluations until the best value is <= target or None, best value) of one seed."""
    f, bound, _ = FUNCTIONS[function]
    search = SearchConfig(seed=seed, **evolution)
    sampler = make_sampler(search, name)
    study = optuna.create_study(sampler=sampler)
    space = {f"x{i}": optuna.distributions.FloatDistribution(-bound, bound) for i in range(dim)}
    best, reached = math.inf, None
    for n in range(1, budget + 1):
        trial = study.ask(space)
        value = f(np.array([trial.params[f"x{i}"] for i in range(dim)]))
        study.tell(trial, value)
        best = min(best, value)
        if reached is None and best <= target:
            reached = n
    return reached, best


def bench_samplers(
    samplers: tuple[str, ...] = ("evolution", "random"),
    *,
    function: str = "rosenbrock",
    dim: int = 4,
    budget: int = 300,
    seeds: int = 5,
    target: float | None = None,
    population: int = 16,
    elite_fraction: float = 0.2,
    mutation_scale: float = 0.05,
) -> BenchResult:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = FUNCTIONS[function][2] if target is None else target
    rows = []
    for name in samplers:
        t0 = time.perf_counter()
        runs = [
            run_sampler(
                name,
                function,
                dim,
                budget,
                target,
                seed,
                population=population,
                elite_fraction=elite_fraction,
                mutation_scale=mutation_scale,
            )
            for seed in range(seeds)
        ]
        evals = [n if n is not None else budget for n, _ in runs]
        bests = [b for _, b in runs]
        rows.append(
            SamplerRow(
                name,
                sum(n is not None for n, _ in runs),
                seeds,
                float(np.mean(evals)),
                float(np.median(bests)),
                bests,
                time.perf_counter() - t0,
            )
        )
    return BenchResult(function, dim, budget, target, rows)
