"""A user's model, data and losses, named by import path, train in one process; wrong paths,
signatures or returned objects are one-line config errors."""

import json
import os
import re

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
import torch

from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.tasks import build_task
from scaletrain.train.trainer import train

pytestmark = pytest.mark.timeout(120)


def metrics(run_dir, kind="epoch"):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [r for r in rows if r.get("kind") == kind]


@pytest.mark.parametrize("builder", ["torch_mlp", "keras_mlp"])
def test_a_torch_or_keras_classifier_learns_the_users_arrays(builder, write_config, tmp_path):
    path = write_config({"model": {"name": f"byom_user:{builder}"}})
    result = train(load_config(path))
    assert result.best["value"] > 0.9, result.best  # val/accuracy of well separated blobs
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert any(p.endswith("byom_user.py") for p in provenance["data"])  # the data's code


def test_a_keras_run_resumes_from_its_checkpoint(write_config, tmp_path):
    path = write_config({"model": {"name": "byom_user:keras_mlp", "args": {"dropout": 0.2}}})
    assert main(["train", str(path), "--epochs", "2"]) == 0
    assert main(["train", str(path), "--epochs", "3", "--resume"]) == 0
    assert [r["epoch"] for r in metrics(tmp_path / "run")] == [1, 2, 3]


def test_a_user_loss_and_metrics_are_trained_and_logged(write_config, tmp_path):
    path = write_config({
        "data": {"source": "byom_user:line", "args": {}},
        "model": {"name": "byom_user:torch_mlp", "args": {"dim": 4, "hidden": 16, "classes": 1}},
        "supervised": {"loss": "byom_user:mse", "metrics": ["byom_user:abs_error"]},
        "optim": {"name": "adam", "lr": 0.03},
        "train": {"epochs": 4, "best_metric": "val/loss", "best_mode": "min"},
    })  # fmt: skip
    train(load_config(path))
    epochs = metrics(tmp_path / "run")
    assert set(epochs[-1]) >= {"val/loss", "val/abs_error"}
    assert epochs[-1]["val/loss"] < 0.5 * epochs[0]["val/loss"]


def test_a_user_gan_runs_the_step_schedule_with_the_other_model_frozen(write_config):
    cfg = load_config(write_config(GAN))
    from scaletrain.models.registry import build_models

    models = build_models(cfg.model.name, cfg.model.args)
    task = build_task(cfg, models, torch.device("cpu"))
    calls = []

    def update(name, loss):
        for model in models.values():
            model.zero_grad(set_to_none=True)
        loss.backward()
        with_grads = [
            k for k, m in models.items() if any(p.grad is not None for p in m.parameters())
        ]
        calls.append((name, with_grads))

    out = task.train_step({"x": torch.randn(16, 2)}, update)
    assert calls == [("discriminator", ["discriminator"])] * 2 + [("generator", ["generator"])] * 3
    assert {"d_loss", "d_real_score", "g_loss", "g_radius"} <= set(out)
    evaluated = task.eval_step({"x": torch.randn(16, 2)})
    assert evaluated["loss"] == evaluated["g_loss"]


GAN = {
    "data": {"source": "byom_user:ring", "args": {}},
    "task": "gan",
    "model": {"name": "byom_user:gan_models", "args": {}},
    "gan": {
        "discriminator_loss": "byom_user:d_loss",
        "generator_loss": "byom_user:g_loss",
        "discriminator_steps": 2,
        "generator_steps": 3,
    },
    "train": {"epochs": 2, "best_metric": "val/loss", "best_mode": "min"},
}


def test_a_gan_of_a_torch_generator_and_a_keras_discriminator_trains(write_config, tmp_path):
    path = write_config({**GAN, "model": {"name": "byom_user:keras_discriminator_gan"}})
    assert main(["train", str(path)]) == 0
    assert {"val/d_loss", "val/g_loss", "val/loss"} <= set(metrics(tmp_path / "run")[-1])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"model": {"name": "byom_user:nope"}}, "'byom_user' has no callable 'nope'"),
        ({"model": {"name": "no_such_package.models:build"}}, "cannot import"),
        ({"model": {"name": "byom_user:blobs", "args": {}}}, "must return a torch.nn.Module"),
        ({"model": {"name": "byom_user:keras_unbuilt", "args": {}}}, "Keras model is not built"),
        ({"model": {"name": "byom_user:torch_mlp", "args": {"width": 3}}}, "model.args.width"),
        ({"data": {"source": "byom_user"}}, "must look like package.module:function"),
        ({"data": {"source": "byom_user:blobs", "args": {"size": 9}}}, "data.source.*accept"),
        ({"data": {"source": "byom_user:torch_mlp", "args": {}}}, "must be a mapping of arrays"),
        ({"supervised": {"loss": "byom_user:one_argument"}}, "must accept \\(outputs, batch\\)"),
        ({"supervised": {"loss": "byom_user:nope"}}, "supervised.loss"),
        (
            {
                "data": {"source": "byom_user:line"},
                "supervised": {"loss": "byom_user:not_a_scalar"},
                "model": {"name": "byom_user:torch_mlp", "args": {"dim": 4, "classes": 1}},
            },
            "must return scalars",
        ),
        ({**GAN, "gan": {"generator_loss": "byom_user:g_loss"}}, "set gan.discriminator_loss"),
        ({**GAN, "model": {"name": "byom_user:torch_mlp"}}, "'discriminator': D"),
    ],
)
def test_wrong_user_code_is_a_one_line_config_error(extra, message, write_config, capsys):
    path = write_config(extra)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(message, err), err
