"""Keras 3 models (torch backend) as torch modules: weights, state, training flag, seeds."""

import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras
import pytest
import torch

from scaletrain.errors import ConfigError
from scaletrain.models.keras_adapter import KerasModule, adapt
from scaletrain.models.registry import build_models


def build(**args) -> KerasModule:
    torch.manual_seed(0)  # the trainer seeds torch before building; Keras follows it
    return build_models("byom_user:keras_mlp", {"dropout": 0.5, **args})["model"]


def test_trainable_weights_are_parameters_and_moving_statistics_are_buffers():
    model = build()
    assert isinstance(model, KerasModule)
    params = dict(model.named_parameters())
    assert all(p.requires_grad for p in params.values())
    assert {k.rsplit("__", 1)[1] for k in params} == {"kernel", "bias", "gamma", "beta"}
    buffers = dict(model.named_buffers())
    assert {k.rsplit("__", 1)[1] for k in buffers} >= {"moving_mean", "moving_variance"}
    # each variable once, under its Keras path
    keras_count = sum(int(v.value.numel()) for v in model.keras_model.variables)
    assert sum(t.numel() for t in model.state_dict().values()) == keras_count


def test_train_and_eval_reach_dropout_and_batch_norm():
    model = build()
    x = torch.randn(64, 8)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))  # dropout is active
    key = next(k for k in model.state_dict() if k.endswith("moving_mean"))
    assert not torch.equal(model.state_dict()[key], torch.zeros(16))  # BN statistics moved


def test_optimizer_steps_and_loaded_states_reach_keras():
    model = build(dropout=0.0)
    x = torch.randn(32, 8)
    model.eval()
    before = model(x).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    model(x).pow(2).mean().backward()
    optimizer.step()
    model.eval()
    assert not torch.allclose(model(x), before)
    model.load_state_dict(state)
    assert torch.allclose(model(x), before)


def test_replaced_buffers_are_rebound_into_keras():
    """Parameter servers swap buffers for views into one flat vector: Keras must follow."""
    model = build(dropout=0.0).eval()
    x = torch.randn(8, 8)
    before = model(x).detach()
    key = next(k for k in model.state_dict() if k.endswith("moving_variance"))
    model._buffers[key] = torch.full_like(model._buffers[key], 100.0)
    assert not torch.allclose(model(x), before)


def test_the_run_seed_gives_the_same_initial_weights():
    a, b = build().state_dict(), build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(1)
    c = build_models("byom_user:keras_mlp")["model"].state_dict()
    assert any(not torch.equal(a[k], c[k]) for k in a if k.endswith("kernel"))


def test_an_unbuilt_keras_model_is_a_config_error():
    with pytest.raises(ConfigError, match=r"not built.*keras.Input"):
        build_models("byom_user:keras_unbuilt")


def test_a_keras_model_of_another_backend_is_a_config_error(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "tensorflow")
    with pytest.raises(ConfigError, match=r"'tensorflow' backend.*KERAS_BACKEND=torch"):
        adapt("mine", keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))


def test_every_process_builds_the_same_initial_weights(user_env):
    """Even when the builder imports Keras itself (nothing to seed before it runs)."""
    script = (
        "import torch; from scaletrain.models.registry import build_models; "
        "torch.manual_seed(0); m = build_models('byom_user:keras_mlp')['model']; "
        "print(sorted((k, float(v.double().sum())) for k, v in m.state_dict().items()))"
    )
    env = {k: v for k, v in user_env.items() if k != "KERAS_BACKEND"}  # chosen by scaletrain

    def weights() -> str:
        command = [sys.executable, "-c", script]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    assert weights() == weights()
