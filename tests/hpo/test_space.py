import optuna
import pytest

from scaletrain.config import from_dict, load_config
from scaletrain.errors import ConfigError
from scaletrain.hpo.samplers import SAMPLERS, make_pruner, make_sampler
from scaletrain.hpo.space import distributions, with_params

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(params: dict) -> dict:
    raw = {"search": {"params": params}}
    return distributions(from_dict(raw), raw)


def test_a_search_section_becomes_typed_optuna_distributions():
    dists = space({
        "optim.lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "train.batch_size": {"type": "int", "low": 8, "high": 64},
        "optim.name": {"type": "categorical", "choices": ["adam", "sgd"]},
        "model.args.dropout": {"low": 0.0, "high": 0.5},
    })  # fmt: skip
    assert dists["optim.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["train.batch_size"] == optuna.distributions.IntDistribution(8, 64)
    assert dists["optim.name"].choices == ("adam", "sgd")
    assert isinstance(dists["model.args.dropout"], optuna.distributions.FloatDistribution)


def test_an_unknown_config_key_is_named_with_suggestions():
    with pytest.raises(
        ConfigError, match=r"'optim.lrr' is not a config key; did you mean optim.lr"
    ):
        space({"optim.lrr": {"low": 0.1, "high": 1.0}})
    with pytest.raises(ConfigError, match=r"'trian\.epochs' is not a config key"):
        space({"trian.epochs": {"type": "int", "low": 1, "high": 3}})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"optim.lr": {"low": -1.0, "high": 1.0}}, r"optim.lr: value -1.0 is invalid.*too small"),
        ({"optim.lr": {"low": 0.0, "high": 1.0, "log": True}}, "log: true needs low > 0"),
        ({"optim.lr": {"low": 1.0, "high": 0.5}}, "must be below high"),
        ({"train.epochs": {"type": "int", "low": 1.5, "high": 3}}, "integer low and high"),
        ({"optim.name": {"type": "categorical", "choices": ["adam", "lion"]}}, "lion"),
        ({"optim.name": {"type": "categorical"}}, "needs choices"),
        ({"train": {"low": 1, "high": 2}}, "is a section"),
        ({"search.trials": {"type": "int", "low": 1, "high": 2}}, "is a section"),
        ({}, "search.params is empty"),
    ],
)
def test_bad_search_spaces_fail_before_any_trial(params, message):
    with pytest.raises(ConfigError, match=message):
        space(params)


def test_unknown_search_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"search\.sampler"):
        load_config(None, ["search.sampler=annealing"])
    with pytest.raises(ConfigError, match=r"search\.params\.optim\.lr\.typ"):
        load_config(None, ["search.params={optim.lr: {typ: float}}"])


def test_trial_parameters_are_set_on_a_copy_of_the_raw_config():
    raw = {"optim": {"lr": 0.1}, "model": {"name": "mlp"}}
    out = with_params(raw, {"optim.lr": 0.5, "model.args.hidden": 8})
    assert out == {"optim": {"lr": 0.5}, "model": {"name": "mlp", "args": {"hidden": 8}}}
    assert raw == {"optim": {"lr": 0.1}, "model": {"name": "mlp"}}


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_proposes_inside_the_space(name):
    cfg = load_config(None, ["search.seed=3", "search.population=4"])
    sampler = make_sampler(cfg.search, name)
    study = optuna.create_study(sampler=sampler, pruner=make_pruner(cfg.search))
    dist = {"x": optuna.distributions.FloatDistribution(-2.0, 2.0),
            "k": optuna.distributions.IntDistribution(1, 4)}  # fmt: skip
    for _ in range(12):
        t = study.ask(dist)
        assert -2.0 <= t.params["x"] <= 2.0 and 1 <= t.params["k"] <= 4
        study.tell(t, (t.params["x"] - 0.5) ** 2 + t.params["k"])
    assert study.best_value < 3.0
