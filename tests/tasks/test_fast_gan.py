"""The fast GAN step (tasks/fast_gan.py): the same losses and gradients as GanTask's when both
draw the same random numbers, and `scaletrain train` runs it through the trainer."""

import copy

import pytest
import torch

from scaletrain.config import GanConfig, OptimConfig
from scaletrain.errors import ConfigError
from scaletrain.models.fast_generator import supports
from scaletrain.models.threedgan import build_3dgan
from scaletrain.tasks import build_task
from scaletrain.tasks.fast_gan import FastGanLosses, FastGanTask
from scaletrain.tasks.gan import GanTask
from scaletrain.train.checkpoint import load_checkpoint
from scaletrain.train.trainer import train

CPU = torch.device("cpu")


def _pair(seed: int = 0):
    # no dropout: its masks come from the global generator in one path only
    torch.manual_seed(seed)
    models = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2), dropout=0.0)
    return models, copy.deepcopy(models)


def _grads(module):
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


def _assert_grads_close(fast_module, ref_module):
    """Equal up to float32 rounding, measured against each gradient's largest entry."""
    got, ref = _grads(fast_module), _grads(ref_module)
    assert len(got) == len(ref) > 0
    for a, b in zip(got, ref, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-8


@pytest.mark.parametrize("fast_generator", [True, False])
def test_fast_losses_and_gradients_equal_the_task_with_the_same_draws(fast_generator):
    cfg = GanConfig(latent_size=8, label_flip=0.3)
    ref_models, fast_models = _pair()
    task = GanTask(cfg, OptimConfig(), ref_models, CPU)
    fast = FastGanLosses(fast_models["generator"], fast_models["discriminator"], cfg,
                         compile=False, fast_generator=fast_generator)  # fmt: skip
    real = torch.rand(6, 1, 25, 25, 25) * 0.05
    energy = torch.linspace(20.0, 400.0, 6)

    # both draw energies, latents and label flips in the same order from equal generators
    task.rng.manual_seed(11)
    torch.manual_seed(11)
    ref = task._discriminator_loss(real, energy)
    got = fast.d_loss(real, energy)
    for i, name in enumerate(("d_loss", "d_bce", "d_energy_mape")):
        torch.testing.assert_close(got[i], ref[name], rtol=1e-4, atol=1e-6)
    ref["d_loss"].backward()
    got[0].backward()
    _assert_grads_close(fast_models["discriminator"], ref_models["discriminator"])

    task.rng.manual_seed(12)
    torch.manual_seed(12)
    ref = task._generator_loss(6)
    got = fast.g_loss(6)
    for i, name in enumerate(("g_loss", "g_bce", "g_ecal_mape")):
        torch.testing.assert_close(got[i], ref[name], rtol=1e-4, atol=1e-6)
    ref["g_loss"].backward()
    got[0].backward()
    _assert_grads_close(fast_models["generator"], ref_models["generator"])


def test_a_different_draw_gives_different_losses():
    """The equality above is not trivially true: other random numbers, other losses."""
    cfg = GanConfig(latent_size=8, label_flip=0.3)
    ref_models, fast_models = _pair()
    task = GanTask(cfg, OptimConfig(), ref_models, CPU)
    fast = FastGanLosses(fast_models["generator"], fast_models["discriminator"], cfg,
                         compile=False)  # fmt: skip
    task.rng.manual_seed(1)
    torch.manual_seed(2)
    real, energy = torch.rand(6, 1, 25, 25, 25) * 0.05, torch.linspace(20.0, 400.0, 6)
    ref = task._discriminator_loss(real, energy)["d_loss"]
    assert abs(fast.d_loss(real, energy)[0].item() - ref.item()) > 1e-4


def test_build_task_picks_the_fast_path_as_configured(tiny_gan_config):
    models = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2))
    cfg = tiny_gan_config("gan.fast_path=on")
    assert isinstance(build_task(cfg, models, CPU), FastGanTask)
    auto = build_task(tiny_gan_config("gan.fast_path=auto"), models, CPU)
    assert type(auto) is GanTask  # auto means: on a GPU only
    off = build_task(tiny_gan_config("gan.fast_path=off"), models, CPU)
    assert type(off) is GanTask


def test_fast_path_on_refuses_a_model_it_cannot_run(tiny_gan_config):
    cfg = tiny_gan_config("gan.fast_path=on")
    models = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2))
    models["generator"] = torch.nn.Sequential(torch.nn.Linear(8, 25**3))
    assert not supports(models["generator"])
    with pytest.raises(ConfigError, match="fast_path"):
        build_task(cfg, models, CPU)


def test_trainer_runs_the_fast_step(tiny_gan_config):
    cfg = tiny_gan_config("gan.fast_path=on", "train.epochs=1")
    result = train(cfg)
    assert result.steps > 0
    assert all(torch.isfinite(torch.tensor(v)) for v in result.metrics.values())
    state = load_checkpoint(result.run_dir / "best.pt")
    # the checkpoint holds the plain models: they load without the fast path
    models = build_3dgan(16)
    assert set(state["models"]["generator"]) <= set(models["generator"].state_dict())


def test_yaml_on_and_off_are_read_as_the_words(tmp_path):
    """YAML 1.1 turns a bare on/off into booleans; the config takes them as meant."""
    from scaletrain.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("task: gan\ngan:\n  fast_path: off\n")
    assert load_config(path).gan.fast_path == "off"
    path.write_text("task: gan\ngan:\n  fast_path: on\n")
    assert load_config(path).gan.fast_path == "on"


def test_fast_losses_leave_the_parameters_storage_alone():
    """Parameter servers exchange flat buffers that alias the parameters; the fast step must
    not give any parameter new storage (as a memory-format conversion of the module would)."""
    models = build_3dgan(8, (4, 3, 3), (4, 2, 2, 2))
    before = {n: p.data_ptr() for m in models.values() for n, p in m.named_parameters()}
    fast = FastGanLosses(models["generator"], models["discriminator"], GanConfig(latent_size=8),
                         compile=False)  # fmt: skip
    fast.d_loss(torch.rand(2, 1, 25, 25, 25), torch.full((2,), 50.0))[0].backward()
    after = {n: p.data_ptr() for m in models.values() for n, p in m.named_parameters()}
    assert after == before
