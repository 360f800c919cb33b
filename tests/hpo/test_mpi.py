"""A study over one MPI job of 1 coordinator + groups × folds × fold processes (5 on CPU)."""

import os
import subprocess
import sys

import pytest
from optuna.trial import TrialState

from scaletrain.cli import main
from scaletrain.hpo.study import load_study
from scaletrain.parallel.launch import find_mpiexec

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240)]


def optimize_mpi(n: int, args: list[str], timeout: float = 200) -> subprocess.CompletedProcess:
    """`mpiexec -n n scaletrain optimize ...`, one thread per process, killed after timeout."""
    skip = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "SLURM_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [find_mpiexec(), "-n", str(n), sys.executable, "-m", "scaletrain", "optimize",
               *args, "--no-progress"]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def test_two_groups_train_two_folds_each_in_parallel_like_one_process_in_sequence(
    search_config, tmp_path
):
    search = {"trials": 4, "folds": 2, "pruner": "median", "sampler": "random"}
    path = search_config({"search": search})
    proc = optimize_mpi(5, [str(path), "--groups", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "coordinator=1 groups=2 folds=2" in proc.stdout + proc.stderr  # the layout table
    parallel = load_study(tmp_path / "study")
    assert len(parallel.trials) == 4
    assert {t.state for t in parallel.trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    complete = {t.number: t for t in parallel.trials if t.state == TrialState.COMPLETE}
    for t in complete.values():
        assert len(t.user_attrs["fold_values"]) == 2
        assert sorted(t.intermediate_values) == [1, 2]  # fold 0 reported its epochs to rank 0
    assert (tmp_path / "study" / "best-config.yaml").is_file()

    # the same trials in one process, folds in sequence, give the same fold values
    sequential = search_config({"run": {"dir": str(tmp_path / "seq")}, "search": search}, "s.yaml")
    assert main(["optimize", str(sequential), "--no-progress"]) == 0
    for t in load_study(tmp_path / "seq").trials:
        if t.number in complete and t.state == TrialState.COMPLETE:
            assert complete[t.number].params == t.params
            assert complete[t.number].user_attrs["fold_values"] == pytest.approx(
                t.user_attrs["fold_values"]
            )


def test_groups_of_two_all_reducing_processes_and_a_failing_trial(search_config, tmp_path):
    path = search_config({
        "search": {"trials": 4, "sampler": "random", "seed": 4, "params": {
            "optim.lr": {"low": 0.01, "high": 0.2, "log": True},
            # a batch larger than a rank's share of the data fails on every rank of the fold
            "train.batch_size": {"type": "categorical", "choices": [16, 100000]},
        }},
    })  # fmt: skip
    proc = optimize_mpi(5, [str(path), "--groups", "2", "--gpus-per-worker", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "masters=0 workers=1 gpus=2 -> 5 processes" in out
    study = load_study(tmp_path / "study")
    states = {t.params["train.batch_size"]: t.state for t in study.trials}
    assert states == {16: TrialState.COMPLETE, 100000: TrialState.FAIL}
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert all("exceeds" in t.user_attrs["error"] for t in failed)
    assert len(study.trials) == 4
    # the fold trained with all-reduce over its two processes
    trial = next(t for t in study.trials if t.state == TrialState.COMPLETE)
    provenance = tmp_path / "study" / "trials" / f"{trial.number:04d}" / "provenance.json"
    assert '"allreduce"' in provenance.read_text()


def test_a_layout_that_does_not_fill_np_fails_before_launch(search_config, capsys):
    path = search_config()
    assert main(["optimize", str(path), "--groups", "2", "--folds", "2", "--np", "4"]) == 2
    err = capsys.readouterr().err
    assert "needs 5 processes" in err and "coordinator" in err


def test_groups_without_mpi_ask_for_np(search_config, capsys):
    assert main(["optimize", str(search_config()), "--groups", "2"]) == 2
    assert "--np" in capsys.readouterr().err


def test_trials_trained_by_a_parameter_server_and_its_workers(search_config, tmp_path):
    path = search_config({
        "parallel": {"mode": "downpour"},
        "search": {"trials": 2, "sampler": "random", "seed": 1, "params": {
            "optim.lr": {"low": 0.01, "high": 0.2, "log": True}}},
    })  # fmt: skip
    proc = optimize_mpi(4, [str(path), "--masters", "1", "--workers", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "masters=1 workers=2" in proc.stdout + proc.stderr  # the layout table
    study = load_study(tmp_path / "study")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:  # reported by the master, which validates the central model
        assert trial.value is not None and trial.value < 1.0
        provenance = tmp_path / "study" / "trials" / f"{trial.number:04d}" / "provenance.json"
        assert '"downpour"' in provenance.read_text()


FAIL_ONCE = '''
import os
from pathlib import Path

import torch


def metric(outputs, batch):
    """Fails the first validation of the study (the master's: workers do not validate)."""
    marker = Path(os.environ["FAIL_ONCE_MARKER"])
    if not torch.is_grad_enabled() and not marker.exists():
        marker.touch()
        raise RuntimeError("validation failed once")
    return 0.0
'''


def test_a_trial_whose_master_fails_frees_its_workers_for_the_next(
    search_config, tmp_path, monkeypatch
):
    """The master of trial 0 fails in its first validation; its workers give it up after
    parallel.timeout_s, trial 1 trains, and every process ends. (That their exchange threads
    are woken rather than left waiting in MPI, which the job's end hides, is checked by
    tests/parallel/test_paramserver.py -k woken.)"""
    (tmp_path / "failonce.py").write_text(FAIL_ONCE)
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("FAIL_ONCE_MARKER", str(tmp_path / "failed"))
    path = search_config({
        "parallel": {"mode": "downpour", "timeout_s": 3},
        "supervised": {"target": "pdg", "metrics": ["failonce:metric"]},
        "search": {"trials": 2, "sampler": "random", "seed": 1, "params": {
            "optim.lr": {"low": 0.01, "high": 0.2, "log": True}}},
    })  # fmt: skip
    proc = optimize_mpi(4, [str(path), "--masters", "1", "--workers", "2"], timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(tmp_path / "study")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "validation failed once" in study.trials[0].user_attrs["error"]
