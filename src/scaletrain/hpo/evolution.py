"""The evolutionary sampler of the source documents, as an Optuna sampler.

A chromosome is the vector of hyper-parameters, its fitness the objective. Generation 0 is
`population` chromosomes drawn at random from the space. Each later generation is bred from
the fittest `elite_fraction` of every chromosome evaluated so far (so the elite survive from
one generation to the next without being trained again): two parents chosen by binary
tournament, a child at a random point between them (one interpolation weight per gene),
then a small Gaussian move of `mutation_scale` times the parameter's range (in log space
for log parameters), clipped to the bounds; integers are rounded, categoricals are taken
from one parent (and, with probability `mutation_scale`, redrawn).

Generations run in sequence and each one can be evaluated in parallel: a trial's generation
and slot are stored in its system attributes, a generation is bred only from trials of
earlier generations, and `ready()` tells a driver whether it must wait for the current
generation to finish before asking for more. Every proposal is drawn from a random stream
seeded by (seed, trial number), so the same seed and the same results give the same study,
asked one by one or a generation at a time, and a resumed study continues where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

GENERATION = "evolution:generation"
PARENTS = "evolution:parents"
# set by `hpo.storage.requeue_interrupted` on a trial killed mid-run: its slot is free again
VOID = "scaletrain:interrupted"


class EvolutionSampler(BaseSampler):
    def __init__(
        self,
        population: int = 8,
        elite_fraction: float = 0.2,
        mutation_scale: float = 0.05,
        seed: int | None = None,
    ) -> None:
        if population < 2:
            raise ValueError(f"population must be at least 2, got {population}")
        if not 0.0 < elite_fraction <= 1.0:
            raise ValueError(f"elite_fraction must be in (0, 1], got {elite_fraction}")
        self.population = population
        self.elite_fraction = elite_fraction
        self.mutation_scale = mutation_scale
        self.seed = 0 if seed is None else seed
        self._space = IntersectionSearchSpace(include_pruned=True)

    # ------------------------------------------------------------------ generations

    def generation_of(self, trial: FrozenTrial) -> int | None:
        return trial.system_attrs.get(GENERATION)

    def _members(self, trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
        out: dict[int, list[FrozenTrial]] = {}
        for t in trials:
            g = self.generation_of(t)
            if g is not None and not t.system_attrs.get(VOID):
                out.setdefault(g, []).append(t)
        return out

    def ready(self, study: optuna.Study) -> bool:
        """Whether a trial asked now gets a slot: False while the current generation is
        full but not finished (the next one must be bred from all of its results)."""
        members = self._members(study.get_trials(deepcopy=False))
        if not members:
            return True
        last = members[max(members)]
        return len(last) < self.population or all(t.state.is_finished() for t in last)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if GENERATION in trial.system_attrs:  # already placed (a trial re-created in place)
            return
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        members = self._members(others)
        current = max(members, default=0)
        full = len(members.get(current, [])) >= self.population
        study._storage.set_trial_system_attr(trial._trial_id, GENERATION, current + int(full))

    # ------------------------------------------------------------------ sampling

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self._space.calculate(study)
        return {k: d for k, d in space.items() if not d.single()}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        generation = study._storage.get_trial_system_attrs(trial._trial_id).get(GENERATION, 0)
        if generation == 0:
            return {}  # the first generation is drawn at random (sample_independent)
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        pool = [
            t
            for t in trials
            if (self.generation_of(t) or 0) < generation
            and all(k in t.params for k in search_space)
            and t.value is not None
            and math.isfinite(t.value)
        ]
        if not pool:
            return {}
        elite = self.elite(pool, study.direction)
        rng = self._rng(trial.number)
        a, b = self._tournament(elite, study.direction, rng), None
        others = [t for t in elite if t.number != a.number]
        b = self._tournament(others, study.direction, rng) if others else a
        study._storage.set_trial_system_attr(trial._trial_id, PARENTS, [a.number, b.number])
        child = {}
        for name, dist in sorted(search_space.items()):
            child[name] = self._breed(dist, a.params[name], b.params[name], rng)
        return child

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        rng = self._rng(trial.number, param_name)
        return _uniform(param_distribution, rng)

    # ------------------------------------------------------------------ the algorithm

    def elite(self, pool: Sequence[FrozenTrial], direction: StudyDirection) -> list[FrozenTrial]:
        """The fittest fraction of the evaluated chromosomes (at least two when possible)."""
        ranked = sorted(pool, key=lambda t: _fitness(t, direction), reverse=True)
        keep = max(2, math.ceil(self.elite_fraction * self.population))
        return ranked[: min(keep, len(ranked))]

    @staticmethod
    def _tournament(
        candidates: Sequence[FrozenTrial], direction: StudyDirection, rng: np.random.Generator
    ) -> FrozenTrial:
        i, j = rng.integers(len(candidates), size=2)
        first, second = candidates[int(i)], candidates[int(j)]
        return first if _fitness(first, direction) >= _fitness(second, direction) else second

    def _breed(self, dist: BaseDistribution, x: Any, y: Any, rng: np.random.Generator) -> Any:
        if isinstance(dist, CategoricalDistribution):
            if rng.random() < self.mutation_scale:
                return dist.choices[int(rng.integers(len(dist.choices)))]
            return x if rng.random() < 0.5 else y
        assert isinstance(dist, (FloatDistribution, IntDistribution))
        to, back = (math.log, math.exp) if dist.log else (float, float)
        lo, hi = to(dist.low), to(dist.high)
        u = rng.random()
        gene = to(x) + u * (to(y) - to(x))
        gene += rng.normal(0.0, self.mutation_scale * (hi - lo))
        value = back(min(max(gene, lo), hi))
        return _snap(dist, value)

    def _rng(self, number: int, name: str = "") -> np.random.Generator:
        key = [self.seed, number, *(ord(c) for c in name)]
        return np.random.default_rng(np.random.SeedSequence(key))


def _fitness(trial: FrozenTrial, direction: StudyDirection) -> float:
    """Larger is fitter, whatever the study's direction (kept as a float: no rounding)."""
    value = float(trial.value)
    return -value if direction == StudyDirection.MINIMIZE else value


def _uniform(dist: BaseDistribution, rng: np.random.Generator) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return dist.choices[int(rng.integers(len(dist.choices)))]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    if dist.log:
        value = math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    else:
        value = rng.uniform(dist.low, dist.high)
    return _snap(dist, value)


def _snap(dist: FloatDistribution | IntDistribution, value: float) -> float | int:
    """Onto the distribution's grid (integers, steps) and inside its bounds."""
    step = getattr(dist, "step", None)
    if step is not None:
        value = dist.low + round((value - dist.low) / step) * step
    value = min(max(value, dist.low), dist.high)
    return round(value) if isinstance(dist, IntDistribution) else float(value)
