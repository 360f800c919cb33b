from pathlib import Path

import pytest

from scaletrain.config import Config, load_config, save_config
from scaletrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_defaults_follow_the_published_3dgan_recipe():
    cfg = load_config()
    assert cfg.model.name == "3dgan"
    assert cfg.gan.loss_weights == [6.0, 0.2, 0.1]
    assert cfg.gan.generator_steps == 2
    assert cfg.optim.name == "rmsprop" and cfg.optim.lr == 1e-3


def test_overrides_parse_values_as_yaml():
    cfg = load_config(
        None,
        ["train.epochs=3", "optim.lr=1e-4", "gan.loss_weights=[1, 2, 3]", "data.max_showers=null"],
    )
    assert cfg.train.epochs == 3
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.gan.loss_weights == [1.0, 2.0, 3.0]
    assert cfg.data.max_showers is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=3", "did you mean epochs"),
        ("trian.epochs=3", "did you mean train"),
        ("train.epochs=-1", "allowed: >= 1"),
        ("data.val_fraction=2", "allowed: <= 0.9"),
        ("task=regression", "choose one of: gan, supervised"),
        ("optim.lr=fast", "must be a number"),
        ("train.progress=3", "true or false"),
        ("train.batch_size=1.5", "must be an integer"),
        ("gan.loss_weights=3", "must be a list"),
        ("train=3", "must be a mapping"),
        ("novalue", "section.key=value"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_yaml_file_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config(None, ["train.epochs=7", "model.args={latent_size: 16}"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.digest() == cfg.digest()
    assert Config().digest() != cfg.digest()


@pytest.mark.parametrize("name", ["demo.yaml", "3dgan.yaml", "calo-classifier.yaml"])
def test_shipped_configs_are_valid(name):
    load_config(REPO / "configs" / name)
