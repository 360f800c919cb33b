"""Bad input of every kind: one clear line on stderr, exit code 2, existing outputs untouched."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaletrain.cli import main
from scaletrain.config import load_config
from scaletrain.errors import ConfigError
from scaletrain.train.checkpoint import save_checkpoint

# ---------------------------------------------------------------------------- helpers


def snapshot(root: Path) -> dict[str, str]:
    """Content hash of every file under root: outputs must not change on failure."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def good_showers(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "ECAL": rng.random((n, 25, 25, 25), dtype=np.float32) * 1e-3,
        "energy": np.full(n, 100.0, np.float32),
    }


def h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value
    return path


def bad_h5_files(d: Path) -> dict[str, Path]:
    g = good_showers()
    nan = g["ECAL"].copy()
    nan[3, 1, 2, 3] = np.nan
    inf_energy = g["energy"].copy()
    inf_energy[0] = np.inf
    good = h5(d / "good.h5", **g)
    truncated = d / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    text = d / "text.h5"
    text.write_text("this is not HDF5\n")
    return {
        "missing ECAL": h5(d / "no_ecal.h5", energy=g["energy"]),
        "missing energy": h5(d / "no_energy.h5", ECAL=g["ECAL"]),
        "wrong shape": h5(d / "shape.h5", ECAL=g["ECAL"][:, :, :, 0], energy=g["energy"]),
        "wrong dtype": h5(d / "dtype.h5", ECAL=(g["ECAL"] > 0).astype("S1"), energy=g["energy"]),
        "truncated": truncated,
        "not hdf5": text,
        "nan cells": h5(d / "nan.h5", ECAL=nan, energy=g["energy"]),
        "inf energy": h5(d / "inf.h5", ECAL=g["ECAL"], energy=inf_energy),
        "empty": h5(d / "empty.h5", ECAL=g["ECAL"][:0], energy=g["energy"][:0]),
        "length mismatch": h5(d / "mismatch.h5", ECAL=g["ECAL"], energy=g["energy"][:5]),
        "missing file": d / "does-not-exist.h5",
    }


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.fixture
def outputs(tmp_path) -> Path:
    """An existing results tree that no failing command may touch."""
    out = tmp_path / "outputs"
    (out / "run").mkdir(parents=True)
    (out / "run" / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "gen.h5").write_bytes(b"previous results")
    (out / "report").mkdir()
    (out / "report" / "report.md").write_text("# previous report\n")
    return out


# ---------------------------------------------------------------------------- configs

CONFIG_CASES = {
    "unknown section": "trian: {epochs: 1}",
    "unknown key": "train: {epoch: 1}",
    "wrong type": "train: {batch_size: many}",
    "negative size": "train: {batch_size: -4}",
    "zero epochs": "train: {epochs: 0}",
    "fraction out of range": "data: {val_fraction: 1.5}",
    "bad choice": "task: regression",
    "bad optimizer": "optim: {name: lbfgs}",
    "not yaml": "train: [unclosed",
    "not a mapping": "- train\n- data",
    "section not a mapping": "train: 3",
    "unknown model": "model: {name: resnet9000}",
    "bad model argument": "model: {name: 3dgan, args: {latent: 3}}",
    "bad import path": "model: {name: 'no_such_package.models:build'}",
    "missing data": "data: {path: /no/such/data}",
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_is_one_line_exit_2_and_touches_nothing(case, tmp_path, outputs, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(CONFIG_CASES[case] + "\n")
    before = snapshot(outputs)
    code, err = run_cli(
        ["train", str(cfg), "--run-dir", str(outputs / "run"), "--overwrite"], capsys
    )
    assert_one_line_error(code, err)
    assert snapshot(outputs) == before


def test_missing_config_file(tmp_path, capsys):
    assert_one_line_error(*run_cli(["train", str(tmp_path / "nope.yaml")], capsys))


def test_bad_override(tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    assert_one_line_error(*run_cli(["train", str(cfg), "--set", "train.epochs"], capsys))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(
        [
            "train.epochs",
            "train.batch_size",
            "optim.lr",
            "data.val_fraction",
            "train.progress",
            "task",
            "gan.loss_weights",
            "run.seed",
        ]
    ),
    value=st.one_of(
        st.integers(-(10**6), 10**6),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.booleans(),
        st.none(),
        st.lists(st.integers(), max_size=3),
    ),
)
def test_any_override_value_is_accepted_or_rejected_with_a_config_error(key, value):
    """Property: config loading never fails with anything but a ConfigError."""
    try:
        load_config(None, [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"])
    except ConfigError as exc:
        assert str(exc)


# ---------------------------------------------------------------------------- data files


@pytest.mark.parametrize(
    "case",
    [
        "missing ECAL",
        "missing energy",
        "wrong shape",
        "wrong dtype",
        "truncated",
        "not hdf5",
        "nan cells",
        "inf energy",
        "empty",
        "length mismatch",
        "missing file",
    ],
)
def test_bad_data_file_is_named_in_one_line(case, tmp_path, outputs, capsys):
    bad = bad_h5_files(tmp_path)[case]
    before = snapshot(outputs)
    code, err = run_cli(
        [
            "validate",
            str(bad),
            "--reference",
            str(tmp_path / "good.h5"),
            "--report",
            str(outputs / "report"),
            "--overwrite",
        ],
        capsys,
    )
    assert_one_line_error(code, err)
    assert bad.name in err
    assert snapshot(outputs) == before


@pytest.mark.parametrize("case", ["nan cells", "wrong shape", "not hdf5"])
def test_training_refuses_bad_data_before_touching_the_run(case, tmp_path, outputs, capsys):
    bad = bad_h5_files(tmp_path)[case]
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"data: {{path: {bad}}}\nmodel: {{name: tiny-3dgan}}\n"
        "gan: {latent_size: 16}\ntrain: {epochs: 1, batch_size: 2}\n"
    )
    before = snapshot(outputs)
    code, err = run_cli(
        ["train", str(cfg), "--run-dir", str(outputs / "run"), "--overwrite"], capsys
    )
    assert_one_line_error(code, err)
    assert bad.name in err
    assert snapshot(outputs) == before


def test_inspect_reports_each_bad_file(tmp_path, capsys):
    files = bad_h5_files(tmp_path)
    code = main(["data", "inspect", str(files["missing ECAL"]), str(tmp_path / "good.h5")])
    err = capsys.readouterr().err
    assert code == 2 and "no_ecal.h5" in err


# ---------------------------------------------------------------------------- checkpoints


def checkpoint_cases(d: Path) -> dict[str, Callable[[], Path]]:
    def pickle_payload() -> Path:
        class Payload:
            def __reduce__(self):
                return (print, ("code ran",))

        torch.save(
            {"format": "scaletrain-checkpoint-v1", "config": {}, "models": Payload()},
            d / "payload.pt",
        )
        return d / "payload.pt"

    def supervised() -> Path:
        cfg = load_config(None, ["task=supervised", "model.name=mlp"])
        return save_checkpoint(d / "supervised.pt", {"config": cfg.to_dict(), "models": {}})

    def wrong_weights() -> Path:
        cfg = load_config(None, ["model.name=tiny-3dgan", "gan.latent_size=16"])
        return save_checkpoint(
            d / "wrong.pt",
            {"config": cfg.to_dict(), "models": {"generator": {"dense.weight": torch.zeros(2, 2)}}},
        )

    def truncated() -> Path:
        good = wrong_weights()
        (d / "cut.pt").write_bytes(good.read_bytes()[:100])
        return d / "cut.pt"

    def random_bytes() -> Path:
        (d / "noise.pt").write_bytes(np.random.default_rng(1).bytes(4096))
        return d / "noise.pt"

    def foreign() -> Path:
        torch.save({"state_dict": {"w": torch.zeros(2)}}, d / "foreign.pt")
        return d / "foreign.pt"

    def bad_config() -> Path:
        return save_checkpoint(d / "badcfg.pt", {"config": {"trian": {}}, "models": {}})

    return {
        "pickle payload": pickle_payload,
        "another model": supervised,
        "wrong weights": wrong_weights,
        "truncated": truncated,
        "random bytes": random_bytes,
        "not ours": foreign,
        "invalid stored config": bad_config,
        "missing": lambda: d / "missing.pt",
    }


@pytest.mark.parametrize(
    "case",
    [
        "pickle payload",
        "another model",
        "wrong weights",
        "truncated",
        "random bytes",
        "not ours",
        "invalid stored config",
        "missing",
    ],
)
def test_bad_checkpoint_is_refused_in_one_line(case, tmp_path, outputs, capsys):
    path = checkpoint_cases(tmp_path)[case]()
    before = snapshot(outputs)
    code, err = run_cli(
        ["generate", str(path), "--out", str(outputs / "new.h5"), "--n", "2", "--device", "cpu"],
        capsys,
    )
    assert_one_line_error(code, err)
    assert "code ran" not in capsys.readouterr().out
    assert snapshot(outputs) == before
    assert not (outputs / "new.h5").exists()


# ---------------------------------------------------------------------------- outputs


def test_existing_outputs_are_never_replaced_without_permission(tmp_path, outputs, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    before = snapshot(outputs)
    checks = [
        ["train", str(cfg), "--run-dir", str(outputs / "run")],
        ["train", str(cfg), "--run-dir", str(outputs / "run"), "--resume", "--overwrite"],
        [
            "validate",
            str(tmp_path / "a.h5"),
            "--reference",
            str(tmp_path / "a.h5"),
            "--report",
            str(outputs / "report"),
        ],
    ]
    h5(tmp_path / "a.h5", **good_showers())
    for args in checks:
        assert_one_line_error(*run_cli(args, capsys))
    assert snapshot(outputs) == before


def test_unwritable_output_location(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train: {epochs: 1}\n")
    code, err = run_cli(["train", str(cfg), "--run-dir", str(blocker / "run")], capsys)
    assert_one_line_error(code, err)
    code, err = run_cli(["data", "simulate", "--out", str(blocker / "d"), "--n", "2"], capsys)
    assert_one_line_error(code, err)
