"""The two worked examples of docs/your-model.md train and search as shipped (on tiny data)."""

from pathlib import Path

import pytest

from scaletrain.cli import main
from scaletrain.data.simulator import simulate_to_files

EXAMPLES = Path(__file__).parents[2] / "examples"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def showers(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("example-showers")
    for seed, particle in enumerate(("e-", "pi+")):
        simulate_to_files(out / particle, 48, (10.0, 200.0), particle=particle, seed=seed,
                          progress=False)  # fmt: skip
    return {"electrons": out / "e-", "pions": out / "pi+"}


def run(example: str, command: str, config: str, sets: list[str], monkeypatch) -> int:
    folder = EXAMPLES / example
    monkeypatch.syspath_prepend(str(folder))  # as PYTHONPATH=. in the example's folder
    args = [a for s in sets for a in ("--set", s)]
    extra = ["--no-progress"] if command == "optimize" else []
    return main([command, str(folder / config), *args, *extra])


def train_and_search(example: str, sets: list[str], out, monkeypatch) -> None:
    train = [*sets, f"run.dir={out / 'train'}"]
    assert run(example, "train", "config.yaml", train, monkeypatch) == 0
    assert (out / "train" / "best.pt").is_file()
    search = [*sets, f"run.dir={out / 'search'}", "search.trials=2"]
    assert run(example, "optimize", "search.yaml", search, monkeypatch) == 0
    assert (out / "search" / "best-config.yaml").is_file()


def test_the_torch_energy_regressor_trains_and_searches(showers, tmp_path, monkeypatch):
    sets = [f"data.path={showers['electrons']}", "run.device=cpu"]
    sets += ["train.epochs=1", "train.batch_size=8"]
    train_and_search("torch_energy_regressor", sets, tmp_path, monkeypatch)


def test_the_keras_classifier_trains_and_searches(showers, tmp_path, monkeypatch):
    sets = [f"data.args.electrons={showers['electrons']}", f"data.args.pions={showers['pions']}"]
    sets += ["train.epochs=1", "train.batch_size=8"]
    train_and_search("keras_classifier", sets, tmp_path, monkeypatch)
