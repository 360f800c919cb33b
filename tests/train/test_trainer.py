import json
from pathlib import Path

import pytest
import torch

from scaletrain.errors import CheckpointError, RunDirError, TrainingError
from scaletrain.parallel.strategy import Strategy
from scaletrain.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from scaletrain.train.metrics import read_metrics
from scaletrain.train.trainer import Trainer, train


def step_losses(run_dir, epoch):
    return [
        r["train/d_loss"]
        for r in read_metrics(run_dir)
        if "train/d_loss" in r and r["epoch"] == epoch
    ]


def test_training_writes_a_complete_run_directory(tiny_gan_config):
    cfg = tiny_gan_config("train.epochs=1")
    result = train(cfg)
    run = result.run_dir
    for name in (
        "config.yaml",
        "provenance.json",
        "metrics.jsonl",
        "best.pt",
        f"ckpt-step{result.steps:08d}.pt",
    ):
        assert (run / name).exists(), name
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["config_digest"] == cfg.digest()
    assert all(v.startswith("sha256") for v in provenance["data"].values())
    assert len(provenance["data"]) == 2
    assert "val/loss" in result.metrics
    state = load_checkpoint(run / "best.pt")
    assert state["epoch"] == 1 and state["step"] == result.steps


def test_resume_continues_exactly_like_an_uninterrupted_run(tiny_gan_config, tmp_path):
    full = train(tiny_gan_config(f"run.dir={tmp_path / 'full'}"))
    train(tiny_gan_config(f"run.dir={tmp_path / 'part'}", "train.epochs=1"))
    # a checkpoint counts its own epoch's score: the resumed run compares with the true best
    assert load_checkpoint(latest_checkpoint(tmp_path / "part"))["best"]["epoch"] == 1
    resumed = train(tiny_gan_config(f"run.dir={tmp_path / 'part'}"), resume=True)
    assert resumed.steps == full.steps
    assert resumed.best == full.best
    assert step_losses(tmp_path / "part", 1) == step_losses(tmp_path / "full", 1)
    a = load_checkpoint(latest_checkpoint(tmp_path / "full"))["models"]
    b = load_checkpoint(latest_checkpoint(tmp_path / "part"))["models"]
    for name in a:
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), (name, key)


def test_same_seed_same_losses_other_seed_other_losses(tiny_gan_config, tmp_path):
    train(tiny_gan_config(f"run.dir={tmp_path / 'a'}", "train.epochs=1"))
    train(tiny_gan_config(f"run.dir={tmp_path / 'b'}", "train.epochs=1"))
    train(tiny_gan_config(f"run.dir={tmp_path / 'c'}", "train.epochs=1", "run.seed=5"))
    assert step_losses(tmp_path / "a", 0) == step_losses(tmp_path / "b", 0)
    assert step_losses(tmp_path / "a", 0) != step_losses(tmp_path / "c", 0)


def test_existing_run_is_never_clobbered(tiny_gan_config):
    cfg = tiny_gan_config("train.epochs=1")
    first = train(cfg)
    before = (first.run_dir / "best.pt").read_bytes()
    with pytest.raises(RunDirError, match="--resume"):
        train(cfg)
    assert (first.run_dir / "best.pt").read_bytes() == before
    with pytest.raises(RunDirError, match="nothing to resume"):
        train(tiny_gan_config("run.dir=/nonexistent/never"), resume=True)


def test_logged_training_metrics_are_the_means_of_their_steps(tiny_gan_config):
    trainer = Trainer(tiny_gan_config("train.epochs=1", "train.log_every=3"))
    steps: list[dict[str, float]] = []
    train_step = trainer.task.train_step

    def recorded(batch, update):
        out = train_step(batch, update)
        steps.append({k: float(v) for k, v in out.items()})
        return out

    trainer.task.train_step = recorded
    trainer.fit()
    logged = [r for r in read_metrics(trainer.run_dir) if "train/d_loss" in r]
    # 80 training showers, batch 8: logs after steps 3, 6, 9 and the epoch's last, 10
    assert [r["step"] for r in logged] == [3, 6, 9, 10]
    windows = [steps[0:3], steps[3:6], steps[6:9], steps[9:10]]
    for record, window in zip(logged, windows, strict=True):
        for key in ("d_loss", "g_loss"):
            mean = sum(s[key] for s in window) / len(window)
            assert record[f"train/{key}"] == pytest.approx(mean, rel=1e-5), (record["step"], key)


def test_nonfinite_loss_stops_with_the_batch_named(tiny_gan_config):
    cfg = tiny_gan_config("gan.image_scale=.nan", "train.epochs=1")
    with pytest.raises(TrainingError, match="non-finite loss at epoch 0, batch 0"):
        train(cfg)
    assert "batch 0" in (Path(cfg.run.dir) / "nonfinite.log").read_text()


def test_nonfinite_loss_can_be_skipped(tiny_gan_config):
    cfg = tiny_gan_config("gan.image_scale=.nan", "train.epochs=1", "train.on_nonfinite=skip")
    result = train(cfg)
    log = (result.run_dir / "nonfinite.log").read_text()
    assert "epoch 0, batch 0, discriminator loss" in log


def test_checkpoints_refuse_pickled_code_and_truncation(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "scaletrain-checkpoint-v1", "config": {}, "models": Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    good = save_checkpoint(tmp_path / "good.pt", {"config": {}, "models": {"m": {}}})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "other.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "other.pt")


def test_fidelity_is_computed_during_training_and_picks_the_best_checkpoint(tiny_gan_config):
    cfg = tiny_gan_config(
        "train.fidelity_every=1", "train.fidelity_showers=40", "train.best_metric=val/fidelity"
    )
    result = train(cfg)
    epochs = [r for r in read_metrics(result.run_dir) if r.get("kind") == "epoch"]
    values = [r["val/fidelity"] for r in epochs]
    assert len(values) == 2 and all(v > 0 for v in values)
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["metrics"]["val/fidelity"] == min(values)
    assert result.best == {"metric": "val/fidelity", "value": min(values), "epoch": best["epoch"]}


class _Shard(Strategy):
    """One process standing in for rank `r` of a data-parallel group of 2 (no communication)."""

    def __init__(self, r: int) -> None:
        self.r = r

    @property
    def data_rank(self) -> tuple[int, int]:
        return self.r, 2


def test_data_parallel_ranks_draw_different_latents(tiny_gan_config, tmp_path):
    """Replicas that read different shards must not also share their GAN noise."""
    draws = []
    for r in (0, 1, 0):
        trainer = Trainer(tiny_gan_config(f"run.dir={tmp_path / str(r)}"), strategy=_Shard(r),
                          overwrite=True)  # fmt: skip
        draws.append(trainer.task.sample_energies(4))
    assert torch.equal(draws[0], draws[2])  # the same rank, the same stream
    assert not torch.equal(draws[0], draws[1])


def test_a_cpu_run_on_a_machine_with_gpus_starts_neither_cuda_nor_mpi(
    tiny_gan_config, tmp_path, monkeypatch
):
    """A CUDA context costs GPU memory and seconds in every process that creates one, and one
    process needs no MPI: training and fast generation on the CPU of a GPU machine start
    neither; provenance and checkpoints name only what the run used."""
    import subprocess
    import sys

    from scaletrain.generate import generate_file

    def touched(*args, **kwargs):
        raise AssertionError("a CPU run started CUDA")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("get_device_name", "get_device_properties", "get_rng_state_all", "init"):
        monkeypatch.setattr(torch.cuda, name, touched)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a, **k: touched())
    monkeypatch.setattr(torch.Tensor, "pin_memory", touched)
    real_empty = torch.empty

    def empty(*args, pin_memory=False, **kwargs):
        if pin_memory:
            touched()
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", empty)
    result = train(tiny_gan_config("run.device=cpu", "train.epochs=1"))
    env = json.loads((result.run_dir / "provenance.json").read_text())["environment"]
    assert "gpu" not in env and env["cuda devices"] == 1
    assert "cuda" not in load_checkpoint(result.run_dir / "best.pt")["rng"]
    out = tmp_path / "gen.h5"
    generate_file(result.run_dir / "best.pt", out, n=20, batch_size=8, device="cpu",
                  progress=False, fast=True)  # fmt: skip
    assert out.exists()
    # MPI: the provenance of one process leaves it alone (a fresh interpreter: this one may
    # have started MPI for other tests)
    code = (
        "import sys; from scaletrain.train.provenance import environment_info; "
        "info = environment_info(probe=False); "
        "assert 'mpi4py.MPI' not in sys.modules, 'MPI started'; print(info['mpi'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "not started (one process)"


def test_a_gpu_process_keeps_and_restores_its_own_gpus_random_stream_only(monkeypatch):
    """A resumed job may see fewer GPUs (one per task instead of the node's): a checkpoint
    holds each process's own GPU's stream, and an older one's list of every GPU's is read at
    the process's own index, or skipped when that GPU is not there."""
    from scaletrain.train.trainer import _rng_state, _set_rng_state

    streams = {1: torch.tensor([1], dtype=torch.uint8), 0: torch.tensor([0], dtype=torch.uint8)}
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: streams[device.index])
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device: restored.append((s, device)))
    gpu1 = torch.device("cuda", 1)
    state = _rng_state(gpu1)
    assert state["cuda"] is streams[1] and "cuda" not in _rng_state(torch.device("cpu"))
    _set_rng_state(state, gpu1)
    _set_rng_state({"cuda": [streams[0], streams[1]]}, gpu1)  # older: every GPU's
    _set_rng_state({"cuda": [streams[0]]}, gpu1)  # older, GPU 1 not among them
    _set_rng_state(state, torch.device("cpu"))
    assert restored == [(streams[1], gpu1), (streams[1], gpu1)]
