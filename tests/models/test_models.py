import pytest
import torch

from scaletrain.errors import ConfigError
from scaletrain.models.registry import build_models


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_3dgan_has_the_published_parameter_counts():
    models = build_models("3dgan")
    assert n_params(models["generator"]) == 872_808
    assert n_params(models["discriminator"]) == 73_402


def test_3dgan_maps_latent_to_25_cubed_showers_and_back():
    models = build_models(
        "3dgan", {"generator_filters": [8, 4, 4], "discriminator_filters": [4, 4, 4, 4]}
    )
    image = models["generator"](torch.randn(3, 200))
    assert image.shape == (3, 1, 25, 25, 25)
    assert (image >= 0).all()  # ReLU output: energies are never negative
    logit, energy = models["discriminator"](image)
    assert logit.shape == (3,) and energy.shape == (3,)


def test_calo_cnn_has_class_and_energy_heads():
    out = build_models("calo-cnn", {"n_classes": 3})["model"](torch.rand(2, 1, 25, 25, 25))
    assert out["logits"].shape == (2, 3)
    assert out["energy"].shape == (2,)


def test_user_builder_by_import_path():
    models = build_models("torch.nn:Linear", {"in_features": 4, "out_features": 2})
    assert isinstance(models["model"], torch.nn.Linear)


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("no-such-model", {}, "unknown model"),
        ("no_such_pkg.mod:build", {}, "cannot import"),
        ("torch.nn:NoSuchThing", {}, "no callable"),
        ("3dgan", {"latent": 3}, "not an argument"),
        ("torch.nn:Linear", {"in_features": 4}, "needs model.args: out_features"),
        ("builtins:dict", {}, None),
    ],
)
def test_model_errors_are_clear(name, args, message):
    with pytest.raises(ConfigError, match=message or "must return a torch.nn.Module"):
        build_models(name, args)
