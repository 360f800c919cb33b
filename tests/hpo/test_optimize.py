"""`scaletrain optimize` in one process: outputs, K folds, failures, pruning, errors."""

import csv
import math

import optuna
import pytest
from optuna.trial import TrialState

from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.hpo.study import load_study
from scaletrain.hpo.trial import FoldResult, TrialTask, run_fold, summarize

pytestmark = pytest.mark.timeout(120)


def test_a_study_writes_best_config_trials_csv_and_plots(search_config, tmp_path, capsys):
    path = search_config({"search": {"sampler": "tpe", "trials": 4}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "best val/loss" in out and "optim.lr" in out
    run = tmp_path / "study"
    for name in ("study.db", "trials.csv", "best.json", "best-config.yaml", "history.png",
                 "parallel_coordinates.png", "importances.png"):  # fmt: skip
        assert (run / name).is_file(), name
    rows = list(csv.DictReader((run / "trials.csv").read_text().splitlines()))
    assert [r["state"] for r in rows] == ["complete"] * 4
    study = load_study(run)
    best = load_config(run / "best-config.yaml")
    assert best.optim.lr == study.best_params["optim.lr"]
    assert best.optim.name == study.best_params["optim.name"]
    assert best.run.dir == str(run / "best")
    # the best config trains as it is
    assert main(["train", str(run / "best-config.yaml"), "--epochs", "1"]) == 0


def test_k_folds_train_one_model_per_fold_and_the_sampler_sees_their_mean(search_config, tmp_path):
    path = search_config({"search": {"trials": 2, "folds": 3}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    study = load_study(tmp_path / "study")
    for t in study.trials:
        folds = t.user_attrs["fold_values"]
        assert len(folds) == 3 and len(set(folds)) == 3
        assert t.value == pytest.approx(sum(folds) / 3)
        assert t.user_attrs["std"] > 0
        for k in range(3):
            assert (tmp_path / "study" / "trials" / f"{t.number:04d}" / f"fold{k}").is_dir()


def test_failing_trials_are_recorded_and_the_study_goes_on(search_config, tmp_path):
    path = search_config({
        "train": {"on_nonfinite": "skip"},
        "search": {"trials": 6, "seed": 0, "params": {
            # a huge learning rate makes the loss non-finite: the objective is NaN
            "optim.lr": {"type": "categorical", "choices": [0.05, 1.0e30]},
            # a batch larger than the data raises in the trainer
            "train.batch_size": {"type": "categorical", "choices": [32, 100000]},
        }},
    })  # fmt: skip
    assert main(["optimize", str(path), "--no-progress"]) == 0
    study = load_study(tmp_path / "study")
    states = {t.state for t in study.trials}
    assert len(study.trials) == 6 and states == {TrialState.COMPLETE, TrialState.FAIL}
    errors = " ".join(t.user_attrs.get("error", "") for t in study.trials)
    assert "exceeds" in errors and "objective is nan" in errors
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            assert t.params == {"optim.lr": 0.05, "train.batch_size": 32}


def test_a_trial_past_its_timeout_fails(search_config, tmp_path):
    path = search_config({"search": {"trials": 2, "trial_timeout": 1e-6}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    study = load_study(tmp_path / "study")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert "trial_timeout" in study.trials[0].user_attrs["error"]


def test_the_median_pruner_stops_trials_that_learn_worse(search_config, tmp_path):
    path = search_config({
        "train": {"epochs": 4},
        "search": {"trials": 6, "pruner": "median", "seed": 2, "params": {
            "optim.lr": {"type": "categorical", "choices": [0.1, 1.0e-7]},
        }},
    })  # fmt: skip
    assert main(["optimize", str(path), "--no-progress"]) == 0
    study = load_study(tmp_path / "study")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.params["optim.lr"] == 1.0e-7 for t in pruned)
    assert all(len(t.intermediate_values) < 4 for t in pruned)


def test_the_evolution_sampler_runs_generations_through_the_cli(search_config, tmp_path):
    path = search_config({"search": {"trials": 6, "sampler": "evolution", "population": 3}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    rows = list(csv.DictReader((tmp_path / "study" / "trials.csv").read_text().splitlines()))
    assert [r["generation"] for r in rows] == ["0", "0", "0", "1", "1", "1"]


def test_an_objective_the_task_does_not_report_stops_the_study(search_config, tmp_path, capsys):
    path = search_config({"search": {"objective": "val/fidelity"}})
    assert main(["optimize", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "val/fidelity" in err and "val/accuracy" in err
    assert len(load_study(tmp_path / "study").trials) == 1


def test_an_unknown_key_in_the_space_is_one_line_before_anything_runs(
    search_config, tmp_path, capsys
):
    path = search_config({"search": {"params": {"optim.lrate": {"low": 0.1, "high": 1.0}}}})
    assert main(["optimize", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'optim.lrate' is not a config key" in err
    assert not (tmp_path / "study").exists()


def test_an_existing_study_is_not_overwritten_without_asking(search_config, tmp_path, capsys):
    path = search_config({"search": {"trials": 1}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    assert main(["optimize", str(path), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["optimize", str(path), "--no-progress", "--overwrite", "--trials", "2"]) == 0
    assert len(load_study(tmp_path / "study").trials) == 2


def test_summarize_folds():
    ok = summarize([FoldResult(1, 2.0), FoldResult(0, 1.0)])
    assert ok.state == "complete" and ok.value == 1.5 and ok.fold_values == [1.0, 2.0]
    assert ok.std == pytest.approx(math.sqrt(0.5))
    assert summarize([FoldResult(0, 1.0), FoldResult(1, math.nan)]).state == "fail"
    failed = summarize([FoldResult(0, 1.0), FoldResult(1, error="boom")])
    assert failed.state == "fail" and failed.error == "fold 1: boom"
    assert summarize([FoldResult(0, pruned=True)]).state == "pruned"


def test_a_fold_that_cannot_start_is_a_failed_result_not_an_exception(tmp_path):
    task = TrialTask(0, {}, {"data": {"path": str(tmp_path / "none")}}, str(tmp_path))
    result = run_fold(task, 0)
    assert result.error and not result.fatal and result.value is None


def test_load_study_reads_the_run_directory(search_config, tmp_path):
    path = search_config({"search": {"trials": 1, "study_name": "named"}})
    assert main(["optimize", str(path), "--no-progress"]) == 0
    study = load_study(tmp_path / "study", name="named")
    assert isinstance(study, optuna.Study) and len(study.trials) == 1
