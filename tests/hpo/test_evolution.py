import math

import optuna
import pytest
from optuna.trial import TrialState

from scaletrain.hpo.evolution import GENERATION, PARENTS, EvolutionSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "x": optuna.distributions.FloatDistribution(-5.0, 5.0),
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "n": optuna.distributions.IntDistribution(1, 9),
    "opt": optuna.distributions.CategoricalDistribution(["sgd", "adam", "rmsprop"]),
}


def objective(params: dict) -> float:
    penalty = {"sgd": 0.3, "adam": 0.0, "rmsprop": 0.1}[params["opt"]]
    x, lr, n = params["x"], params["lr"], params["n"]
    return (x - 1.0) ** 2 + (math.log10(lr) + 3) ** 2 + abs(n - 4) + penalty


def run(sampler: EvolutionSampler, n: int, batch: int = 1) -> optuna.Study:
    """Ask `batch` trials at once (a generation evaluated in parallel), then tell them."""
    study = optuna.create_study(sampler=sampler)
    while len(study.trials) < n:
        asked = []
        while len(asked) < batch and sampler.ready(study) and len(study.trials) < n:
            asked.append(study.ask(SPACE))
        for trial in asked:
            study.tell(trial, objective(trial.params))
    return study


def test_first_generation_is_random_then_generations_follow_in_sequence():
    study = run(EvolutionSampler(population=5, seed=1), 20)
    generations = [t.system_attrs[GENERATION] for t in study.trials]
    assert generations == [g for g in range(4) for _ in range(5)]
    assert all(PARENTS not in t.system_attrs for t in study.trials[:5])
    assert all(PARENTS in t.system_attrs for t in study.trials[5:])


def test_children_come_from_the_fittest_fraction_of_earlier_generations():
    sampler = EvolutionSampler(population=10, elite_fraction=0.2, seed=3)
    study = run(sampler, 40, batch=10)
    for t in study.trials[10:]:
        g = t.system_attrs[GENERATION]
        earlier = [e for e in study.trials if e.system_attrs[GENERATION] < g]
        fittest = sorted(earlier, key=lambda e: e.value)[:2]  # 20 % of 10
        assert set(t.system_attrs[PARENTS]) <= {e.number for e in fittest}


def test_elite_survive_into_the_next_generations_parents():
    sampler = EvolutionSampler(population=6, elite_fraction=0.34, seed=0)
    study = run(sampler, 12, batch=6)
    first = sorted(study.trials[:6], key=lambda t: t.value)
    elite = sampler.elite(study.trials[:6], study.direction)
    assert [t.number for t in elite] == [t.number for t in first[:3]]
    parents = {p for t in study.trials[6:] for p in t.system_attrs[PARENTS]}
    assert parents <= {t.number for t in elite} and len(parents) >= 2


def test_proposals_stay_inside_the_space_with_integers_and_choices():
    study = run(EvolutionSampler(population=4, mutation_scale=0.5, seed=2), 40)
    for t in study.trials:
        p = t.params
        assert -5.0 <= p["x"] <= 5.0 and 1e-5 <= p["lr"] <= 1e-1
        assert isinstance(p["n"], int) and 1 <= p["n"] <= 9
        assert p["opt"] in ("sgd", "adam", "rmsprop")


def test_same_seed_gives_the_same_proposals_asked_one_by_one_or_a_generation_at_once():
    a = run(EvolutionSampler(population=4, seed=7), 16, batch=1)
    b = run(EvolutionSampler(population=4, seed=7), 16, batch=4)
    c = run(EvolutionSampler(population=4, seed=8), 16, batch=4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_fitness_is_compared_as_a_float_and_follows_the_direction():
    sampler = EvolutionSampler(population=4, elite_fraction=0.25, seed=0)
    for direction, expect in (("minimize", [1, 3]), ("maximize", [2, 0])):
        study = optuna.create_study(sampler=sampler, direction=direction)
        for value in (0.49, 0.1, 0.9, 0.3):  # int(value) would make them all equal
            study.tell(study.ask(SPACE), value)
        elite = sampler.elite(study.trials, study.direction)
        assert [t.number for t in elite] == expect
        assert all(isinstance(t.value, float) for t in elite)


def test_no_generation_is_bred_twice_while_its_predecessor_runs():
    sampler = EvolutionSampler(population=3, seed=0)
    study = optuna.create_study(sampler=sampler)
    first = [study.ask(SPACE) for _ in range(3)]
    assert not sampler.ready(study)  # generation 0 is full and still running
    for t in first[:2]:
        study.tell(t, objective(t.params))
    assert not sampler.ready(study)
    study.tell(first[2], state=TrialState.FAIL)  # a failed chromosome still ends its generation
    assert sampler.ready(study)
    second = [study.ask(SPACE) for _ in range(3)]
    assert {t.number for t in second} == {3, 4, 5}
    gens = [study._storage.get_trial_system_attrs(t._trial_id)[GENERATION] for t in second]
    assert gens == [1, 1, 1]
    parents = {p for t in second for p in study._storage.get_trial(t._trial_id)
               .system_attrs[PARENTS]}  # fmt: skip
    assert parents <= {first[0].number, first[1].number}


def test_evolution_beats_random_search_on_a_4d_sphere():
    def best(sampler) -> float:
        study = optuna.create_study(sampler=sampler)
        space = {f"x{i}": optuna.distributions.FloatDistribution(-5, 5) for i in range(4)}
        for _ in range(120):
            t = study.ask(space)
            study.tell(t, sum((v - 1) ** 2 for v in t.params.values()))
        return study.best_value

    evo = [best(EvolutionSampler(population=10, seed=s)) for s in range(3)]
    rnd = [best(optuna.samplers.RandomSampler(seed=s)) for s in range(3)]
    assert sum(evo) < sum(rnd) / 3


@pytest.mark.parametrize("bad", [{"population": 1}, {"elite_fraction": 0.0}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError):
        EvolutionSampler(**bad)
