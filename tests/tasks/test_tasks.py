import torch

from scaletrain.config import GanConfig, OptimConfig, SupervisedConfig
from scaletrain.models.registry import build_models
from scaletrain.tasks.gan import GanTask
from scaletrain.tasks.supervised import SupervisedTask


def fake_batch(n: int = 4, energy: float = 100.0) -> dict[str, torch.Tensor]:
    ecal = torch.rand(n, 25, 25, 25) * 0.01
    return {
        "ECAL": ecal,
        "energy": torch.full((n,), energy),
        "theta": torch.zeros(n),
        "pdg": torch.tensor([11, 211] * (n // 2)),
    }


def gan_task(**cfg) -> GanTask:
    torch.manual_seed(0)
    models = build_models("tiny-3dgan")
    return GanTask(GanConfig(latent_size=16, **cfg), OptimConfig(), models, torch.device("cpu"))


def test_gan_step_updates_discriminator_once_then_generator_twice():
    task = gan_task()
    calls = []

    def update(name, loss):
        calls.append(name)
        d_grads = [p.grad.clone() for p in task.discriminator.parameters() if p.grad is not None]
        task.optimizers[name].zero_grad()
        loss.backward()
        if name == "generator":  # the discriminator is frozen during generator updates
            after = [p.grad for p in task.discriminator.parameters() if p.grad is not None]
            assert all(torch.equal(a, b) for a, b in zip(d_grads, after, strict=True))
        task.optimizers[name].step()

    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in task.models.items()}
    out = task.train_step(fake_batch(), update)
    assert calls == ["discriminator", "generator", "generator"]
    assert {"d_loss", "g_loss", "g_ecal_mape"} <= set(out)
    for name, model in task.models.items():
        changed = any(
            not torch.equal(a, b) for a, b in zip(before[name], model.parameters(), strict=True)
        )
        assert changed, f"{name} was not updated"
    assert all(p.requires_grad for p in task.discriminator.parameters())


def test_generator_latent_is_noise_scaled_by_primary_energy():
    task = gan_task()
    rng = torch.Generator().manual_seed(1)
    low = task.sample_latent(torch.tensor([10.0]), rng)
    rng = torch.Generator().manual_seed(1)
    high = task.sample_latent(torch.tensor([400.0]), rng)
    torch.testing.assert_close(high, 40.0 * low)


def test_label_flip_rate_matches_config():
    task = gan_task(label_flip=0.25)
    labels = task._labels(1.0, 20000)
    assert abs((labels == 0).float().mean().item() - 0.25) < 0.02


def test_supervised_classifies_particles_by_pdg():
    torch.manual_seed(0)
    models = build_models("mlp", {"in_features": 25**3, "hidden": [8]})
    task = SupervisedTask(
        SupervisedConfig(classes=[11, 211]), OptimConfig(name="adam"), models, torch.device("cpu")
    )
    batch = fake_batch()
    batch["ECAL"][1::2] *= 5  # make pions distinguishable

    def update(name, loss):
        task.optimizers[name].zero_grad()
        loss.backward()
        task.optimizers[name].step()

    first = task.eval_step(batch)["loss"].item()
    for _ in range(30):
        task.train_step(batch, update)
    assert task.eval_step(batch)["loss"].item() < first
    assert task.eval_step(batch)["accuracy"].item() == 1.0
