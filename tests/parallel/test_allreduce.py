import json
import math
import sys
from pathlib import Path

import pytest
import torch
from _mpi import metric_values, mpirun, run_driver

from scaletrain.parallel.allreduce import LrScaling

HERE = Path(__file__).parent


def test_lr_scaling_rules_and_warmup():
    assert LrScaling("none", 8, 0, 10).factor(0) == 1.0
    assert LrScaling("linear", 8, 0, 10).factor(0) == 8.0
    assert LrScaling("sqrt", 4, 0, 10).factor(3) == 2.0
    warm = LrScaling("linear", 5, 2, 10)  # 2 warm-up epochs of 10 steps
    assert [warm.factor(s) for s in (0, 10, 20, 99)] == [1.0, 3.0, 5.0, 5.0]


def test_lr_scaling_keeps_other_changes_to_the_learning_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scaling = LrScaling("linear", 4, 1, 4)
    LrScaling.rescale({"m": optimizer}, scaling.factor(0))
    for step in range(1, 6):
        if step == 2:
            optimizer.param_groups[0]["lr"] *= 0.5  # e.g. on_nonfinite: lower_lr
        LrScaling.rescale({"m": optimizer}, scaling.factor(step) / scaling.factor(step - 1))
    assert math.isclose(optimizer.param_groups[0]["lr"], 0.1 * 4 * 0.5)


@pytest.mark.mpi
@pytest.mark.timeout(160)
@pytest.mark.parametrize("n", [2, 6])
def test_n_processes_with_batch_b_equal_one_process_with_batch_nb(tmp_path, n):
    out = tmp_path / "out.json"
    proc = mpirun(n, [str(HERE / "_allreduce_equivalence.py"), str(out)], timeout=140)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["buckets"] >= 2  # several buckets, overlapped with backward
    assert result["moved"] > 1e-2  # the weights did change
    assert result["max_diff"] < 1e-5


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_gan_trains_under_allreduce_and_runs_are_reproducible(
    tiny_gan_config, class_overrides, tmp_path
):
    # the GAN pitfall: the discriminator runs forward twice before one backward, is frozen
    # during the generator steps, and its batch-norm buffers must not change mid-step
    gan = tiny_gan_config(
        f"run.dir={tmp_path / 'gan'}",
        "train.epochs=1",
        "run.device=cpu",
        "data.max_showers=64",
        "train.batch_size=8",
    )
    allreduce = ["parallel.mode=allreduce", "parallel.lr_scaling=linear", "train.epochs=2"]
    runs = [
        {"name": "gan", "config": gan.to_dict(), "overrides": ["parallel.mode=allreduce"]},
        {"name": "a", "overrides": class_overrides("a", *allreduce)},
        {"name": "b", "overrides": class_overrides("b", *allreduce)},
        # a NaN loss on one rank only: both skip that update and halve their rates together
        {"name": "nan", "poison": {"rank": 1, "step": 7},
         "overrides": class_overrides("nan", *allreduce, "train.on_nonfinite=lower_lr")},
    ]  # fmt: skip
    results, checksums, proc = run_driver(2, runs, tmp_path / "job", timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "val/loss" in results["gan"]["metrics"]
    for name in ("gan", "a", "nan"):  # every rank ends with the same weights
        assert checksums[0][name] == checksums[1][name], name
    losses = [metric_values(tmp_path / name, "train/loss") for name in ("a", "b")]
    assert losses[0] and losses[0] == losses[1]
    assert results["a"]["best"]["value"] > 0.8
    assert "error" not in results["nan"] and results["nan"]["steps"] == results["a"]["steps"]
    skipped = (tmp_path / "nan" / "nonfinite.log").read_text().splitlines()
    assert len(skipped) == 1 and "on another rank" in skipped[0], skipped
    assert checksums[0]["nan"] != checksums[0]["a"]  # one update fewer, then halved rates


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
