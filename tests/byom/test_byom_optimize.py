"""`scaletrain optimize` searches the hyper-parameters of a user's PyTorch model with every
sampler and of a user's Keras 3 model; 4 trials each, on the user's data."""

import csv

import pytest

from scaletrain.cli import main
from scaletrain.config import load_config

pytestmark = pytest.mark.timeout(120)

SEARCH = {
    "params": {
        "optim.lr": {"type": "float", "low": 0.002, "high": 0.05, "log": True},
        "model.args.hidden": {"type": "int", "low": 4, "high": 24},
    },
    "objective": "val/accuracy",
    "direction": "maximize",
    "trials": 4,
}


def study(write_config, tmp_path, builder: str, sampler: str) -> list[dict]:
    path = write_config(
        {"model": {"name": f"byom_user:{builder}"}, "train": {"epochs": 2},
         "search": {**SEARCH, "sampler": sampler}, "run": {"dir": str(tmp_path / "study")}}
    )  # fmt: skip
    assert main(["optimize", str(path), "--no-progress"]) == 0
    with open(tmp_path / "study" / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == ["complete"] * 4
    best = load_config(tmp_path / "study" / "best-config.yaml")
    assert best.model.name == f"byom_user:{builder}" and 4 <= best.model.args["hidden"] <= 24
    return rows


@pytest.mark.parametrize("sampler", ["gp", "tpe", "random", "cmaes", "evolution"])
def test_every_sampler_searches_a_pytorch_model(sampler, write_config, tmp_path):
    study(write_config, tmp_path, "torch_mlp", sampler)


def test_a_search_over_a_keras_model(write_config, tmp_path):
    rows = study(write_config, tmp_path, "keras_mlp", "tpe")
    assert len({r["model.args.hidden"] for r in rows}) > 1
