"""kill -9 of a 3-process all-reduce training in the middle of an epoch, then --resume: the
final weights equal those of an uninterrupted run, bitwise (CPU, Gloo)."""

from __future__ import annotations

import pytest
import torch
from _procs import launch, wait_until

from scaletrain.config import save_config
from scaletrain.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(300)]

# the published 3DGAN's layers with a few filters, and its dropout: the ranks draw different
# dropout masks and only rank 0 validates, so each rank's random streams must be restored
SMALL_3DGAN = (
    "model.name=3dgan",
    "model.args={latent_size: 16, generator_filters: [4, 2, 2], "
    "discriminator_filters: [2, 2, 2, 2], dropout: 0.2}",
)


def newest_step(run_dir) -> int:
    return max((int(p.name[9:17]) for p in list_checkpoints(run_dir)), default=0)


def test_kill_mid_epoch_then_resume_equals_uninterrupted_run(tiny_gan_config, tmp_path):
    overrides = (
        *SMALL_3DGAN, "run.device=cpu", "run.threads=1", "parallel.mode=allreduce",
        "data.max_showers=45", "train.batch_size=4", "train.val_batches=1",
        "train.checkpoint_every=1", "train.keep_last=3",
    )  # fmt: skip
    # 36 training showers: 3 batches of 4 per rank and epoch, 2 epochs
    per_epoch, steps = 3, 6
    for name in ("ref", "killed"):
        cfg = tiny_gan_config(f"run.dir={tmp_path / name}", *overrides)
        save_config(cfg, tmp_path / f"{name}.yaml")

    reference = launch(tmp_path, 3, ["train", str(tmp_path / "ref.yaml")], name="ref")
    assert reference.wait(150) == 0, reference.stderr[-3000:]
    assert newest_step(tmp_path / "ref") == steps

    job = launch(tmp_path, 3, ["train", str(tmp_path / "killed.yaml")], name="killed")
    try:
        # past the first validation, which moved rank 0's random streams ahead of the others'
        wait_until(lambda: newest_step(tmp_path / "killed") > per_epoch, 120, "a checkpoint")
        assert job.proc.poll() is None, job.stderr[-3000:]
    finally:
        job.kill()  # SIGKILL to mpiexec and every rank
    interrupted = load_checkpoint(latest_checkpoint(tmp_path / "killed"))
    assert per_epoch < interrupted["step"] < steps and interrupted["batch"] > 0
    assert len(interrupted["ranks"]) == 3  # each rank's random state

    resumed = launch(
        tmp_path, 3, ["train", str(tmp_path / "killed.yaml"), "--resume"], name="resumed"
    )
    assert resumed.wait(150) == 0, resumed.stderr[-3000:]
    a = load_checkpoint(latest_checkpoint(tmp_path / "ref"))
    b = load_checkpoint(latest_checkpoint(tmp_path / "killed"))
    assert a["step"] == b["step"] == steps
    for name in a["models"]:
        for key in a["models"][name]:
            assert torch.equal(a["models"][name][key], b["models"][name][key]), (name, key)
    for rank, (x, y) in enumerate(zip(a["ranks"], b["ranks"], strict=True)):
        assert torch.equal(x["rng"]["torch"], y["rng"]["torch"]), rank
        assert torch.equal(x["task"]["rng"], y["task"]["rng"]), rank
