"""A PyTorch and a Keras 3 model, with the user's data, trained by all-reduce and by a
parameter server (1 master + 2 workers) under `mpiexec -n 3` on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaletrain.parallel.launch import find_mpiexec

DRIVER = Path(__file__).with_name("_modes.py")


def last_epoch(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("kind") == "epoch"][-1]


@pytest.mark.mpi
@pytest.mark.timeout(200)
@pytest.mark.parametrize(
    ("builder", "modes"),
    [("torch_mlp", ["allreduce", "downpour"]), ("keras_mlp", ["allreduce", "easgd"])],
)
def test_user_models_train_with_allreduce_and_a_parameter_server(
    builder, modes, write_config, user_env, tmp_path
):
    config = write_config(
        {"model": {"name": f"byom_user:{builder}"}, "train": {"epochs": 4},
         "parallel": {"timeout_s": 60}}
    )  # fmt: skip
    command = [find_mpiexec(), "-n", "3", sys.executable, str(DRIVER), str(config), str(tmp_path)]
    proc = subprocess.run(
        [*command, *modes], capture_output=True, text=True, timeout=180, env=user_env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for mode in modes:
        provenance = json.loads((tmp_path / mode / "provenance.json").read_text())
        assert provenance["world"]["mode"] == mode
        assert last_epoch(tmp_path / mode)["val/accuracy"] > 0.85, mode
    assert os.path.isfile(tmp_path / modes[1] / "best.pt")
