"""Study storage: a killed study resumes, and several processes share one PostgreSQL study."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from scaletrain.cli import main
from scaletrain.hpo.evolution import GENERATION, VOID, EvolutionSampler
from scaletrain.hpo.storage import _safe, counted, requeue_interrupted
from scaletrain.hpo.study import load_study

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.timeout(180)


def scaletrain(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "scaletrain", *args], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_a_killed_study_resumes_and_reruns_the_interrupted_trial(search_config, tmp_path):
    path = search_config({"train": {"epochs": 40}, "search": {"trials": 3}})
    proc = scaletrain("optimize", str(path), "--no-progress")
    db = f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    deadline = time.monotonic() + 90
    interrupted = None
    while time.monotonic() < deadline and interrupted is None:
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="study", storage=db).trials
        except Exception:  # the study is not created yet
            continue
        running = [t for t in trials if t.state == TrialState.RUNNING and t.number >= 1]
        interrupted = running[0] if running else None
    assert interrupted is not None, "the study never reached its second trial"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    assert main(["optimize", str(path), "--no-progress", "--resume"]) == 0
    study = load_study(tmp_path / "study")
    old = study.trials[interrupted.number]
    assert old.state == TrialState.FAIL and old.system_attrs[VOID]
    again = [t for t in study.trials if t.user_attrs.get("requeued_from") == old.number]
    assert len(again) == 1 and again[0].params == old.params
    assert again[0].state == TrialState.COMPLETE
    assert study.trials[0].state == TrialState.COMPLETE  # finished trials are kept
    assert counted(study) == 3
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 3


def test_resume_without_a_study_is_one_line(search_config, capsys):
    assert main(["optimize", str(search_config()), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_an_interrupted_chromosome_keeps_its_generation_slot():
    sampler = EvolutionSampler(population=3, seed=0)
    study = optuna.create_study(sampler=sampler)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    asked = [study.ask(space) for _ in range(3)]
    for t in asked[:2]:
        study.tell(t, t.params["x"])
    # the process died with asked[2] running; a resume marks it and enqueues it again
    assert requeue_interrupted(study) == [2]
    replacement = study.ask(space)
    assert replacement.params == asked[2].params
    attrs = study._storage.get_trial_system_attrs(replacement._trial_id)
    assert attrs[GENERATION] == 0
    assert not sampler.ready(study)
    study.tell(replacement, 0.5)
    assert sampler.ready(study)
    nxt = study.ask(space)
    assert study._storage.get_trial_system_attrs(nxt._trial_id)[GENERATION] == 1


def test_passwords_are_not_printed():
    assert _safe("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert _safe("sqlite:///a/b.db") == "sqlite:///a/b.db"
    assert _safe("postgresql://me@db/x") == "postgresql://me@db/x"


# --------------------------------------------------------------------------- PostgreSQL


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server on localhost, on a temporary directory and a free port."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = found[-1] if found else shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    bin_dir = Path(initdb).parent
    root = Path(tempfile.mkdtemp(prefix="scaletrain-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    port, data = _free_port(), root / "data"

    def pg(*args: str) -> None:
        subprocess.run([*run_as, *args], check=True, capture_output=True, timeout=60)

    pg(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "scaletrain", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=localhost -c fsync=off"
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
       "-w", "-t", "30", "start")  # fmt: skip
    try:
        pg(str(bin_dir / "createdb"), "-h", "localhost", "-p", str(port), "-U", "scaletrain",
           "studies")  # fmt: skip
        yield f"postgresql+psycopg2://scaletrain@localhost:{port}/studies"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_several_processes_share_one_study_in_postgresql(search_config, tmp_path, postgres_url):
    path = search_config({"train": {"epochs": 3}, "search": {"trials": 9, "sampler": "tpe"}})
    shared = ["--storage", postgres_url, "--study-name", "shared"]
    procs = [
        scaletrain("optimize", str(path), "--no-progress", *shared, "--run-dir", f"{tmp_path}/j{i}")
        for i in range(3)
    ]
    outputs = [p.communicate(timeout=150)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # each process stops asking once the study holds 9 trials; a few may race past it
    assert 9 <= len(complete) <= 11 and len(complete) == len(study.trials)
    assert len({t.user_attrs["process"] for t in complete}) >= 2
    assert len({t.number for t in complete}) == len(complete)
    for i in range(3):
        assert (tmp_path / f"j{i}" / "best-config.yaml").is_file()
