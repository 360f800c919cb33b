import itertools
import json
import random
import subprocess
from pathlib import Path

import pytest
import torch
from _mpi import metric_values, mpirun, run_driver, scaletrain
from torch import nn

from scaletrain.config import ParallelConfig, load_config, save_config
from scaletrain.errors import ConfigError, LayoutError
from scaletrain.models.calo_cnn import build_calo_cnn
from scaletrain.models.chain import chain_forward
from scaletrain.models.registry import build_models
from scaletrain.models.small import build_mlp, build_tiny_3dgan
from scaletrain.models.threedgan import build_3dgan
from scaletrain.parallel import World, make_strategy
from scaletrain.parallel.pipeline import _split_sizes
from scaletrain.parallel.pipeline_stages import (
    balanced_bounds,
    chain_of,
    measure_layers,
    plan_stages,
)
from scaletrain.tasks.base import make_optimizer
from scaletrain.train import checkpoint as ckpt

HERE = Path(__file__).parent


# ---------------------------------------------------------------------------- one process


def test_balanced_cuts_minimize_the_largest_stage():
    rng = random.Random(0)
    for _ in range(200):
        n, stages = rng.randint(1, 8), rng.randint(1, 4)
        if stages > n:
            continue
        costs = [rng.randint(0, 100) for _ in range(n)]
        bounds = balanced_bounds(costs, stages)
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a < b for a, b in bounds) and all(
            b == c for (_, b), (c, _) in itertools.pairwise(bounds)
        )
        best = min(
            max(sum(costs[a:b]) for a, b in itertools.pairwise((0, *cuts, n)))
            for cuts in itertools.combinations(range(1, n), stages - 1)
        )
        assert max(sum(costs[a:b]) for a, b in bounds) == best


def test_layer_costs_are_measured_flops_not_layer_counts():
    d = build_3dgan()["discriminator"]
    costs = measure_layers(chain_of("d", d), d.example_input())
    # the first convolution, 1 -> 32 channels, 5^3 kernel, on 25^3 cells: 2 FLOPs per MAC
    assert costs[0].flops == 2 * 32 * 125 * 25**3
    assert costs[1].flops == 0 and costs[1].elements == 32 * 25**3  # LeakyReLU
    by_flops = plan_stages("d", d, chain_of("d", d), 2, "flops")
    by_layers = plan_stages("d", d, chain_of("d", d), 2, "layers")
    assert by_flops.bounds != by_layers.bounds
    assert by_flops.imbalance < by_layers.imbalance
    assert "cut by flops" in by_flops.table() and "Heads" in by_flops.table()


@pytest.mark.parametrize(
    ("models", "shape"),
    [
        (build_tiny_3dgan(16), {"generator": (3, 16), "discriminator": (3, 1, 25, 25, 25)}),
        (build_mlp(32, 2, (8, 8)), {"model": (3, 32)}),
        (build_calo_cnn(channels=(2, 3)), {"model": (3, 1, 25, 25, 25)}),
    ],
)
def test_pipeline_layers_compose_to_the_forward(models, shape):
    torch.manual_seed(0)
    for name, model in models.items():
        model.eval()
        x = torch.rand(shape[name])
        assert tuple(model.example_input(3).shape) == shape[name]
        expected, got = model(x), chain_forward(chain_of(name, model), x)
        flat = zip(
            torch.utils._pytree.tree_leaves(expected), torch.utils._pytree.tree_leaves(got),
            strict=True,
        )  # fmt: skip
        assert all(torch.equal(a, b) for a, b in flat)


def test_more_stages_than_layers_is_a_one_line_layout_error():
    model = build_mlp(32, 2, ())["model"]  # Flatten, heads
    with pytest.raises(LayoutError, match="has 2 layers, too few for 3 stages") as info:
        plan_stages("model", model, chain_of("model", model), 3)
    assert "\n" not in str(info.value)


def test_a_model_that_is_not_a_chain_is_refused_by_name():
    class Branchy(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ConfigError, match=r"'net' \(Branchy\) cannot be cut into stages"):
        chain_of("net", Branchy())
    assert len(chain_of("seq", nn.Sequential(nn.Linear(2, 2), nn.ReLU()))) == 2


def test_microbatches_is_a_validated_config_key():
    assert load_config(None, []).parallel.microbatches == 4
    with pytest.raises(ConfigError, match=r"parallel\.microbatches = 0 is too small"):
        load_config(None, ["parallel.microbatches=0"])
    with pytest.raises(ConfigError, match="pipeline_split"):
        load_config(None, ["parallel.pipeline_split=params"])
    assert _split_sizes(10, 4) == [3, 3, 2, 2] and _split_sizes(2, 4) == [1, 1]


def test_one_stage_pipeline_sums_micro_batch_gradients_exactly():
    torch.manual_seed(0)
    reference = build_mlp(32, 2, (8, 8))["model"]
    torch.manual_seed(0)
    strategy = make_strategy(ParallelConfig(mode="pipeline", microbatches=3), World())
    (split,) = strategy.place_models(build_mlp(32, 2, (8, 8)), torch.device("cpu")).values()
    x, y = torch.rand(7, 32), torch.randint(0, 2, (7,))
    for model in (reference, split):
        out = model(x)
        (nn.functional.cross_entropy(out["logits"], y) + out["energy"].mean()).backward()
    got = dict(split.named_full_parameters())
    for name, p in reference.named_parameters():
        torch.testing.assert_close(got[name].grad, p.grad, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------- MPI


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_pipelined_3dgan_equals_the_unsplit_model(tmp_path):
    out = tmp_path / "out.json"
    proc = mpirun(2, [str(HERE / "_pipeline_equivalence.py"), str(out)], timeout=220)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["stages"] == 2
    for case in ("eval", "train_one_microbatch", "train_microbatches", "published_discriminator"):
        c = r[case]
        assert all(len(b) == 2 for b in c["bounds"].values()), case  # both models in 2 stages
        # the unsplit model run on the same micro-batches: the same numbers
        assert c["losses"] == pytest.approx(c["micro"]["losses"], rel=1e-6), case
        assert c["micro"]["grad_diff"] < 1e-6, case
    for case in ("eval", "train_one_microbatch", "published_discriminator"):
        # the unsplit model on the whole batch: equal up to float summation order
        c = r[case]
        assert c["losses"] == pytest.approx(c["whole"]["losses"], rel=1e-5), case
        assert c["whole"]["grad_diff"] < 1e-3, case
    # batch norm in training mode normalizes each micro-batch by itself: not the whole batch
    assert r["train_microbatches"]["whole"]["grad_diff"] > 1e-3
    # the gathered checkpoint state is one process's, models and RMSprop state alike
    assert r["checkpoint"]["model_max_diff"] < 1e-6
    assert r["checkpoint"]["optimizer_max_diff"] < 1e-6
    assert r["checkpoint"]["reload_max_diff"] == 0.0 and r["checkpoint"]["steps"] == [1.0]


@pytest.fixture
def gan_yaml(tiny_gan_config, tmp_path):
    path = tmp_path / "gan.yaml"
    cfg = tiny_gan_config(
        "run.device=cpu", "run.threads=1", "data.max_showers=40", "train.epochs=1",
        "train.val_batches=1", "train.keep_last=3",
    )  # fmt: skip
    save_config(cfg, path)
    return path


@pytest.mark.mpi
@pytest.mark.timeout(400)
def test_pipeline_gan_trains_from_the_cli_checkpoints_the_whole_model_and_resumes(
    gan_yaml, tmp_path
):
    # the tiny 3DGAN's widths with dropout: each stage draws its own masks, also after resume
    args = {"latent_size": 16, "generator_filters": [4, 2, 2],
            "discriminator_filters": [2, 2, 2, 2], "dropout": 0.3}  # fmt: skip
    model = ["--set", "model.name=3dgan", "--set", f"model.args={json.dumps(args)}"]

    def train(name: str, *extra: str) -> subprocess.CompletedProcess:
        done = scaletrain(
            ["train", str(gan_yaml), "--mode", "pipeline", "--np", "2", "--run-dir",
             str(tmp_path / name), "--set", "parallel.microbatches=2", *model, *extra]
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    done = train("a")
    assert done.stdout.count("trained 1 epochs") == 1  # rank 0 reports
    assert "pipeline: discriminator in 2 stages, cut by flops" in done.stdout
    provenance = json.loads((tmp_path / "a" / "provenance.json").read_text())
    assert provenance["world"]["plans"]["generator"]["bounds"][0][0] == 0

    # the checkpoint holds the whole model: one process loads models and optimizers as its own
    state = ckpt.load_checkpoint(tmp_path / "a" / "best.pt")
    models = build_models("3dgan", args)
    cfg = load_config(gan_yaml)
    for name, net in models.items():
        net.load_state_dict(state["models"][name])  # strict: every key, every shape
        make_optimizer(cfg.optim, net.parameters()).load_state_dict(state["optimizers"][name])
    with torch.no_grad():
        logit, energy = models["discriminator"].eval()(models["generator"](torch.randn(2, 16)))
    assert logit.shape == energy.shape == (2,)
    assert len(state["ranks"]) == 2  # each stage's random streams

    # --resume continues where the pipeline stopped, as if it had never stopped
    train("a", "--epochs", "2", "--resume")
    train("b", "--epochs", "2")
    a, b = tmp_path / "a", tmp_path / "b"
    steps = len(metric_values(b, "train/g_loss"))
    assert steps > 2 and ckpt.latest_checkpoint(a).name == ckpt.checkpoint_name(steps)
    assert metric_values(a, "train/g_loss") == metric_values(b, "train/g_loss")
    assert metric_values(a, "val/loss") == metric_values(b, "val/loss")


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_pipeline_with_one_micro_batch_trains_like_one_process(gan_yaml, tmp_path):
    # dropout off (tiny-3dgan) and whole-batch batch norm: two stages are one process
    one = scaletrain(["train", str(gan_yaml), "--run-dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-3000:]
    two = scaletrain(
        ["train", str(gan_yaml), "--mode", "pipeline", "--np", "2", "--run-dir",
         str(tmp_path / "two"), "--set", "parallel.microbatches=1"]
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    for key in ("train/d_loss", "train/g_loss", "val/loss"):
        expected, split = (metric_values(tmp_path / run, key) for run in ("one", "two"))
        assert expected and split == pytest.approx(expected, rel=1e-5)


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_pipeline_trains_a_supervised_model(class_overrides, tmp_path):
    path = tmp_path / "mlp.yaml"
    save_config(load_config(None, class_overrides("mlp", "train.epochs=3")), path)
    done = scaletrain(["train", str(path), "--mode", "pipeline", "--np", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pipeline: model in 2 stages" in done.stdout
    state = ckpt.load_checkpoint(tmp_path / "mlp" / "best.pt")
    model = build_models("mlp", {"in_features": 32, "hidden": [64]})["model"]
    model.load_state_dict(state["models"]["model"])
    # validation accuracy on the XOR problem (one process: about 0.91 after 3 epochs)
    assert max(metric_values(tmp_path / "mlp", "val/accuracy")) > 0.85


def test_a_wrong_pipeline_layout_is_one_line_before_any_process_starts(class_overrides, tmp_path):
    path = tmp_path / "flat.yaml"
    save_config(
        load_config(None, class_overrides("flat", "model.args={in_features: 32, hidden: []}")), path
    )
    done = scaletrain(["train", str(path), "--mode", "pipeline", "--np", "3"], timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "model 'model' has 2 layers, too few for 3 stages" in lines[0]
    assert not (tmp_path / "flat").exists()  # nothing ran


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_hung_stage_is_named_within_the_timeout(class_overrides, tmp_path):
    overrides = class_overrides(
        "hang", "train.epochs=1", "parallel.mode=pipeline", "parallel.timeout_s=5"
    )
    runs = [{"name": "hang", "overrides": overrides, "hang": {"rank": 1, "step": 3}}]
    results, _, proc = run_driver(2, runs, tmp_path / "job", timeout=100)
    assert proc.returncode != 0
    assert "hang" in results, proc.stderr[-3000:]  # rank 0 wrote its error before aborting
    error = results["hang"]["error"]
    assert error.startswith("pipeline stage 0:") and "rank 1" in error, error
    assert "within 5 s (parallel.timeout_s); it died or hung" in error
