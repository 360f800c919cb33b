"""Samplers and pruners by name: Optuna's, plus our evolutionary sampler."""

from __future__ import annotations

import importlib.util

import optuna

from scaletrain.config import SearchConfig
from scaletrain.errors import ConfigError
from scaletrain.hpo.evolution import EvolutionSampler

SAMPLERS = ("gp", "tpe", "random", "cmaes", "evolution")


def make_sampler(search: SearchConfig, name: str | None = None) -> optuna.samplers.BaseSampler:
    """The sampler `name` (default: search.sampler), seeded with search.seed."""
    name = name or search.sampler
    seed = search.seed
    if name == "gp":  # Bayesian optimization with a Gaussian-process prior
        return optuna.samplers.GPSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("sampler cmaes needs the cmaes package: pip install cmaes")
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "evolution":
        return EvolutionSampler(
            population=search.population,
            elite_fraction=search.elite_fraction,
            mutation_scale=search.mutation_scale,
            seed=seed,
        )
    raise ConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")


def make_pruner(search: SearchConfig) -> optuna.pruners.BasePruner:
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def ready(sampler: optuna.samplers.BaseSampler, study: optuna.Study) -> bool:
    """Whether the sampler can propose a trial now (evolution waits for its generation)."""
    return sampler.ready(study) if isinstance(sampler, EvolutionSampler) else True
