import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _mpi import clean_env, metric_values, mpirun, scaletrain

from scaletrain.config import load_config, save_config
from scaletrain.errors import ConfigError
from scaletrain.parallel.launch import (
    PIDS_ENV,
    child_env,
    find_mpiexec,
    relaunch_command,
    without_np,
)
from scaletrain.parallel.world import World, launched_by_mpi
from scaletrain.train.checkpoint import load_checkpoint


def test_np_is_removed_from_the_relaunched_command():
    assert without_np(["train", "c.yaml", "--np", "4", "--mode", "gem"]) == [
        "train", "c.yaml", "--mode", "gem",
    ]  # fmt: skip
    assert without_np(["train", "--np=2", "c.yaml"]) == ["train", "c.yaml"]
    command = relaunch_command(3, ["train", "c.yaml", "--np", "3"])
    assert command[1:3] == ["-n", "3"] and command[3:6] == [sys.executable, "-m", "scaletrain"]
    assert "--np" not in command


def test_mpiexec_next_to_the_interpreter_is_preferred():
    assert Path(find_mpiexec()).parent == Path(sys.executable).parent


def test_processes_write_plain_text_where_the_launchers_output_is_no_terminal(tmp_path):
    """(Open MPI's processes write to terminals of its own, whatever mpirun writes to.)"""
    assert child_env(tmp_path, terminal=False)["TERM"] == "dumb"
    assert child_env(tmp_path, terminal=True).get("TERM") == os.environ.get("TERM")
    assert child_env(tmp_path, terminal=True)[PIDS_ENV] == str(tmp_path)


def test_scaletrain_mpiexec_names_the_launcher(monkeypatch, tmp_path):
    mpirun = tmp_path / "mpirun"
    mpirun.write_text("#!/bin/sh\n")
    mpirun.chmod(0o755)
    monkeypatch.setenv("SCALETRAIN_MPIEXEC", str(mpirun))
    assert find_mpiexec() == str(mpirun)
    monkeypatch.setenv("SCALETRAIN_MPIEXEC", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"SCALETRAIN_MPIEXEC=.*missing: no such executable"):
        find_mpiexec()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, False),
        ({"PMI_SIZE": "1"}, False),
        ({"PMI_SIZE": "4", "PMI_RANK": "2"}, True),  # mpiexec (MPICH / Hydra)
        ({"OMPI_COMM_WORLD_SIZE": "2"}, True),  # Open MPI's mpirun
        ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"}, True),  # srun
        ({"PMIX_RANK": "0"}, True),
    ],
)
def test_launchers_are_recognised_from_their_variables(env, expected):
    assert launched_by_mpi(env) is expected


def test_a_launcher_of_another_mpi_library_is_named_not_ignored():
    # the launcher claims 4 processes, but this process's MPI sees itself alone
    with pytest.raises(ConfigError, match="launcher started 4 processes but MPI sees only"):
        World.detect({"PMI_SIZE": "4", "PMI_RANK": "1"})


def test_srun_without_a_pmi_plugin_is_told_to_ask_for_one():
    with pytest.raises(ConfigError, match=r"use srun --mpi=pmix") as info:
        World.detect({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "3"})
    assert "launcher started 8 processes" in str(info.value)


def test_one_process_needs_no_mpi():
    world = World.detect({})
    assert (world.rank, world.size, world.comm) == (0, 1, None)


def _config(class_overrides, tmp_path: Path, name: str, *extra: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    save_config(load_config(None, class_overrides(name, "train.epochs=2", *extra)), path)
    return path


@pytest.mark.mpi
@pytest.mark.timeout(200)
def test_np_relaunches_under_mpiexec_and_returns_its_exit_code(class_overrides, tmp_path):
    config = _config(class_overrides, tmp_path, "np")
    allreduce = ["train", str(config), "--mode", "allreduce", "--np", "2"]
    done = scaletrain(allreduce)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 2 epochs") == 1  # one summary, from rank 0
    provenance = json.loads((tmp_path / "np" / "provenance.json").read_text())
    assert "allreduce" in json.dumps(provenance)
    # reproducible from one job to the next: the same seed gives the same losses
    again = scaletrain([*allreduce, "--run-dir", str(tmp_path / "again")])
    assert again.returncode == 0, again.stderr[-3000:]
    losses = [metric_values(tmp_path / name, "train/loss") for name in ("np", "again")]
    assert losses[0] and losses[0] == losses[1]
    # a failure on the ranks comes back as the exit code, with the error named once per rank
    bad = scaletrain([*allreduce, "--set", "data.path=/none"])
    assert bad.returncode != 0
    assert "error: rank" in bad.stderr and "/none" in bad.stderr


def test_a_layout_that_cannot_fill_np_fails_before_launching(class_overrides, tmp_path):
    config = _config(class_overrides, tmp_path, "bad")
    done = scaletrain(["train", str(config), "--mode", "downpour", "--masters", "2", "--np", "4"])
    assert done.returncode == 2
    assert "needs 5 processes but the MPI world has 4" in done.stderr
    assert "sub-master" in done.stderr


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_layout_that_does_not_fit_the_launched_world_is_told_once(class_overrides, tmp_path):
    """Every rank finds the mismatch; rank 0 alone prints it, with the role table."""
    config = _config(class_overrides, tmp_path, "bad")
    args = ["-m", "scaletrain", "train", str(config), "--mode", "downpour", "--masters", "2"]
    done = mpirun(4, args, timeout=100)
    assert done.returncode != 0
    assert done.stderr.count("needs 5 processes but the MPI world has 4") == 1, done.stderr
    assert done.stderr.count("error:") == 1 and "error: rank 0:" in done.stderr
    assert "sub-master" in done.stderr


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_started_by_mpiexec_directly_the_master_writes_the_run(class_overrides, tmp_path):
    config = _config(class_overrides, tmp_path, "direct", "parallel.easgd_tau=4")
    args = ["-m", "scaletrain", "train", str(config), "--mode", "easgd"]
    done = mpirun(3, args, timeout=100)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "direct" / "best.pt").exists()
    rows = (tmp_path / "direct" / "metrics.jsonl").read_text().splitlines()
    assert any("ps/staleness_max" in row for row in rows)


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_the_slurm_script_stops_on_its_signal_and_a_second_job_continues(class_overrides, tmp_path):
    """examples/slurm/train.sbatch run twice as a job chain would (its srun standing in for
    mpiexec -n 2 here): the first job gets Slurm's SIGUSR1 after an epoch and ends well with
    a checkpoint; the second finds it and resumes."""
    script = Path(__file__).parents[2] / "examples" / "slurm" / "train.sbatch"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    run = tmp_path / "run"
    srun = bin_dir / "srun"  # drops srun's options, starts the command on 2 processes and
    srun.write_text(  # with SIGNAL set, sends SIGUSR1 once an epoch is done, as --signal does
        "#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\n"
        f'{find_mpiexec()} -n 2 "$@" &\npid=$!\n'
        'if [ -n "${SIGNAL:-}" ]; then\n'
        f'  until grep -qs \'"kind": "epoch"\' {run}/metrics.jsonl; do sleep 0.2; done\n'
        "  kill -USR1 $pid\nfi\nwait $pid\n"
    )
    srun.chmod(0o755)
    config = _config(class_overrides, tmp_path, "slurm")
    env = {
        **clean_env(), "CONFIG": str(config), "RUN_DIR": str(run),
        "VENV": str(Path(sys.executable).parent.parent), "SLURM_CPUS_PER_TASK": "1",
    }  # fmt: skip
    env["PATH"] = f"{bin_dir}:{env['PATH']}"

    def job(epochs: int, **extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", str(script), "--epochs", str(epochs)],
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=150)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    first = job(500, SIGNAL="1")
    assert "continuing" not in first.stdout and "stopped by SIGUSR1" in first.stdout
    assert "the next job of the chain continues" in first.stdout
    epochs = load_checkpoint(run)["epoch"]
    assert 1 <= epochs < 500
    second = job(epochs + 1)
    assert "continuing" in second.stdout and f"trained {epochs + 1} epochs" in second.stdout
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["resumed"] is True and "allreduce" in json.dumps(provenance)
