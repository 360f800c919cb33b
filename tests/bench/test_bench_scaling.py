"""`bench scaling`: the files it writes and their internal consistency (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scaletrain.bench.scaling import Settings, _median, base_config, synthetic_data
from scaletrain.bench.scaling_ranks import run_rank
from scaletrain.bench.scaling_results import (
    ALLREDUCE_EFFICIENCY_MIN,
    ASYNC_PER_WORKER_MIN,
    OVERHEAD_MAX,
    ScalingResult,
    ScalingRow,
    cells,
    check_targets,
    derive,
    markdown,
)
from scaletrain.bench.step_timer import StepTimer
from scaletrain.cli import main
from scaletrain.errors import TrainingError

# a small MLP on 32 features keeps every process short
SMALL = [
    "--set", "model.args.in_features=32", "--set", "data.args.features=32",
    "--set", "model.args.hidden=[16]",
]  # fmt: skip


def _close(a: float, b: float, rel: float = 2e-3) -> bool:
    return a == pytest.approx(b, rel=rel, abs=1e-3)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_scaling_command_writes_consistent_json_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "scaling"
    code = main([
        "bench", "scaling", "--modes", "allreduce,downpour", "--np", "1,2", "--steps", "4",
        "--warmup", "1", "--batch-size", "16", "--device", "cpu", "--out", str(out), *SMALL,
        "--concurrent-plain", "--paired",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "scaling.json").read_text())
    assert result["settings"]["threads"] == 1 and result["settings"]["batch_size"] == 16
    plain, none = result["plain"], result["framework"]
    assert plain["mode"] == "plain" and none["mode"] == "none"
    rate = plain["samples_per_s"]
    assert rate > 0 and plain["speedup"] == 1.0
    assert _close(result["overhead"], 1 - none["samples_per_s"] / rate)
    cpu = result["overhead_cpu_time"]
    assert _close(cpu, 1 - plain["cpu_ms_per_step"] / none["cpu_ms_per_step"])

    rows = {(r["mode"], r["processes"]): r for r in result["rows"]}
    assert list(rows) == [
        ("plain", 2), ("allreduce", 1), ("allreduce", 2), ("downpour", 1), ("downpour", 2)
    ]  # fmt: skip
    assert rows["downpour", 1]["note"].startswith("skipped")
    assert rows["downpour", 1]["samples_per_s"] is None
    for key in [("plain", 2), ("allreduce", 1), ("allreduce", 2), ("downpour", 2)]:
        row = rows[key]
        assert not row["note"], row["note"]
        workers = row["workers"]
        assert len(row["worker_samples_per_s"]) == workers
        assert _close(row["samples_per_s"], sum(row["worker_samples_per_s"]))
        assert _close(row["per_worker_samples_per_s"], row["samples_per_s"] / workers)
        assert _close(row["speedup"], row["samples_per_s"] / rate)
        assert _close(row["efficiency"], row["samples_per_s"] / (workers * rate))
        assert _close(row["per_worker_ratio"], row["per_worker_samples_per_s"] / rate)
        assert row["ms_per_step"] > 0 and row["cpu_ms_per_step"] > 0
    assert rows["allreduce", 2]["workers"] == 2 and rows["allreduce", 2]["servers"] == 0
    # two plain loops at once: the ceiling the 2-process modes are compared with
    at_once = rows["plain", 2]
    assert (at_once["workers"], at_once["servers"]) == (2, 0)
    assert at_once["task"].startswith("plain loop")
    for key in [("allreduce", 2), ("downpour", 2)]:
        row = rows[key]
        expected = row["per_worker_samples_per_s"] / at_once["per_worker_samples_per_s"]
        assert _close(row["per_worker_vs_concurrent"], expected)
    assert rows["allreduce", 1]["per_worker_vs_concurrent"] is None  # no N = 1 ceiling row
    ps = rows["downpour", 2]
    assert (ps["workers"], ps["servers"]) == (1, 1)
    # one worker: every update is computed on the current central weights
    assert ps["staleness_mean"] == 0 and ps["staleness_max"] == 0
    assert ps["ps_updates"] >= result["settings"]["epoch_steps"]
    assert 0.0 < ps["master_busy"] <= 1.0 and rows["allreduce", 2]["master_busy"] is None
    # the worker's training thread spent some of its window on exchanges; all-reduce has none
    assert 0.0 < ps["worker_exchange"] < 1.0 and rows["allreduce", 2]["worker_exchange"] is None

    # --paired: every training process also timed the plain loop itself, before and after
    assert not plain["own_plain_samples_per_s"] and at_once["per_worker_vs_own"] is None
    for key in [("allreduce", 1), ("allreduce", 2), ("downpour", 2)]:
        row = rows[key]
        pairs = row["own_plain_samples_per_s"]
        assert len(pairs) == row["workers"] and all(len(p) == 2 and min(p) > 0 for p in pairs)
        ratios = [r / (sum(p) / 2) for r, p in zip(row["worker_samples_per_s"], pairs, strict=True)]
        assert _close(row["per_worker_vs_own"], sum(ratios) / len(ratios))
    assert _close(result["overhead_paired"], 1 - none["per_worker_vs_own"])

    # targets agree with the values they were judged on (whatever the values are): with
    # --paired, each process against its own plain loop
    targets = result["targets"]
    met = result["overhead_paired"] <= OVERHEAD_MAX
    assert targets["overhead"]["status"] == ("met" if met else "not met")
    ok = ps["per_worker_vs_own"] >= ASYNC_PER_WORKER_MIN
    assert targets["async_per_worker"]["status"] == ("met" if ok else "not met")
    assert ps["target"].endswith("not met" if not ok else ": met")
    assert "allreduce_efficiency" not in targets  # a GPU target

    md = (out / "scaling.md").read_text()
    assert markdown(ScalingResult.from_dict(result)) == md  # the JSON holds everything
    assert "scaletrain bench scaling --modes allreduce,downpour" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 + 5  # header, plain + framework, the five points
    assert "| per worker / own plain |" in table[0] and "--paired" in md
    assert f"{rate:,.1f}" in table[1]
    assert table[3].startswith("| plain loops at once | 2 | 2 |")
    assert "skipped" in table[6]
    assert "--concurrent-plain" in md and "Plain loops at once: N copies" in md
    assert f"**{targets['overhead']['status']}**" in md
    assert (
        f"overhead by CPU time per step (hardly affected by other jobs on the cores): {cpu:.1%}"
        in md
    )
    assert {p.name for p in (out / "logs").iterdir()} == {
        "plain-np1.log", "none-np1.log", "plain-np2.log", "allreduce-np1.log", "allreduce-np2.log",
        "downpour-np2.log",
    }  # fmt: skip
    assert "samples/s" in printed and "overhead" in printed
    assert f"{ps['per_worker_vs_own']:.1%} of own plain loop" in printed  # each run as it ends
    # the console table is whole, even where the output is not a wide terminal
    assert "framework 1 proc." in printed and "plain loops at once" in printed


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_interleaved_workers_are_judged_against_their_own_plain_blocks(tmp_path, capsys):
    out = tmp_path / "scaling"
    code = main([
        "bench", "scaling", "--modes", "downpour", "--np", "3", "--steps", "6", "--warmup", "1",
        "--batch-size", "16", "--device", "cpu", "--out", str(out), *SMALL, "--interleave", "2",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads((out / "scaling.json").read_text())
    assert result["settings"]["interleave"] == 2
    none, (ps,) = result["framework"], result["rows"]
    assert not ps["note"] and (ps["workers"], ps["servers"]) == (2, 1)
    assert ps["staleness_max"] >= 0 and 0.0 < ps["worker_exchange"] < 1.0
    for row in (none, ps):  # one plain rate per training process: that of its blocks
        own = row["own_plain_samples_per_s"]
        assert len(own) == row["workers"] and all(len(o) == 1 and o[0] > 0 for o in own)
        ratios = [r / o[0] for r, o in zip(row["worker_samples_per_s"], own, strict=True)]
        assert _close(row["per_worker_vs_own"], sum(ratios) / len(ratios))
    assert _close(result["overhead_paired"], 1 - none["per_worker_vs_own"])
    ok = ps["per_worker_vs_own"] >= ASYNC_PER_WORKER_MIN
    assert result["targets"]["async_per_worker"]["status"] == ("met" if ok else "not met")
    md = (out / "scaling.md").read_text()
    assert markdown(ScalingResult.from_dict(result)) == md
    assert "--interleave 2 --out" in md and "Interleaved (--interleave 2)" in md
    assert "plain loop in the blocks between" in md
    assert f"{ps['per_worker_vs_own']:.1%} of own plain loop" in printed


def test_interleaved_timer_leaves_the_plain_blocks_out_of_the_window(monkeypatch):
    clock = {"wall": 0.0, "cpu": 0.0, "spent": 0.0}
    monkeypatch.setattr("scaletrain.bench.scaling.time.perf_counter", lambda: clock["wall"])
    monkeypatch.setattr("scaletrain.bench.scaling.time.process_time", lambda: clock["cpu"])
    blocks = []

    def plain_block() -> None:  # 5 s of wall and CPU time, none of it the framework's
        blocks.append(step)
        clock["wall"] += 5.0
        clock["cpu"] += 5.0

    timer = StepTimer(2, 7, spent=lambda: clock["spent"], block=3, between=plain_block)
    for step in range(1, 12):  # each framework step: 1 s, 0.5 s of CPU, 0.25 s on exchanges
        clock["wall"] += 1.0
        clock["cpu"] += 0.5
        clock["spent"] += 0.25
        timer(step)
    assert blocks == [5, 8]  # between the spans 3-5, 6-8 and 9 (the window's last step)
    record = timer.record(samples_per_step=10)
    assert record["window_s"] == pytest.approx(7.0)
    assert record["samples_per_s"] == pytest.approx(10.0)
    assert record["cpu_ms_per_step"] == pytest.approx(500.0)
    assert record["exchange_share"] == pytest.approx(0.25)
    short = StepTimer(2, 7)
    short(2)
    with pytest.raises(TrainingError, match="before step 9"):
        short.record(10)


def test_speedup_efficiency_and_targets_follow_from_the_rates():
    rows = [
        ScalingRow("allreduce", 2, 2, samples_per_s=390.0, per_worker_samples_per_s=195.0),
        ScalingRow("gem", 3, 2, 1, samples_per_s=300.0, per_worker_samples_per_s=150.0),
        ScalingRow("easgd", 1, 0, note="skipped: needs 1 master + at least 1 worker"),
    ]
    framework = ScalingRow("none", 1, 1, samples_per_s=98.0, per_worker_samples_per_s=98.0)
    for row in [framework, *rows]:
        derive(row, 100.0)
    assert (rows[0].speedup, rows[0].efficiency, rows[0].per_worker_ratio) == (3.9, 1.95, 1.95)
    assert (rows[1].speedup, rows[1].efficiency, rows[1].per_worker_ratio) == (3.0, 1.5, 1.5)
    assert rows[2].speedup is None
    cpu = check_targets("cpu", framework, rows, 0.02)
    assert cpu["overhead"]["status"] == "met" and cpu["async_per_worker"]["status"] == "met"
    assert "allreduce_efficiency" not in cpu
    # on GPUs the allreduce efficiency is judged, the asynchronous per-worker rate is not
    slow = ScalingRow("allreduce", 2, 2, samples_per_s=190.0, per_worker_samples_per_s=95.0)
    derive(slow, 100.0)
    gpu = check_targets("cuda", framework, [slow], 0.05)
    assert gpu["overhead"]["status"] == "not met"
    assert slow.efficiency < ALLREDUCE_EFFICIENCY_MIN
    assert gpu["allreduce_efficiency"]["status"] == "not met"
    assert "async_per_worker" not in gpu
    # three processes on two GPUs share one: not a measure of all-reduce scaling
    shared = ScalingRow("allreduce", 3, 3, samples_per_s=200.0, per_worker_samples_per_s=66.7)
    derive(shared, 100.0)
    two = check_targets("cuda", framework, [shared], 0.01, gpus=2)
    assert two["allreduce_efficiency"]["status"] == "not measured"
    assert shared.target == "3 processes on 2 GPUs: not judged"


def test_a_worker_paired_with_its_own_plain_loop_is_judged_on_that_ratio():
    # slow against the plain loop's process (a slow start), fast against its own plain loop
    gem = ScalingRow("gem", 2, 1, 1, samples_per_s=80.0, per_worker_samples_per_s=80.0)
    derive(gem, 100.0)
    assert check_targets("cpu", gem, [gem], 0.0)["async_per_worker"]["status"] == "not met"
    gem.per_worker_vs_own = 0.97
    judged = check_targets("cpu", gem, [gem], 0.0)["async_per_worker"]
    assert judged["status"] == "met" and judged["values"] == {"gem np=2": 0.97}
    # of repeated runs, the one with the median paired ratio counts, not the median rate
    runs = [
        (ScalingRow("gem", 2, 1, samples_per_s=rate, per_worker_vs_own=ratio), {"run": i})
        for i, (rate, ratio) in enumerate([(90.0, 0.99), (70.0, 0.96), (80.0, 0.90)])
    ]
    row, device = _median(runs)
    assert device == {"run": 1} and row.repeats_vs_own == [0.99, 0.96, 0.90]
    # the table gives the median and the runs' range
    assert "96.0% (90.0%–99.0%)" in cells(row)


def test_each_run_gets_enough_rows_for_its_training_processes():
    s = Settings(model="mlp", steps=10, warmup=2, batch_size=8)
    raw = base_config(s, "allreduce", "run", trainers=3)
    assert raw["data"]["args"]["n"] >= 14 * 8 * 3  # epoch_steps batches per process
    assert raw["parallel"]["mode"] == "allreduce" and raw["train"]["epochs"] == 1
    assert raw["parallel"]["timeout_s"] == s.timeout_s  # compilation is no lost worker
    half = Settings(model="mlp", steps=10, warmup=2, batch_size=8)
    half.overrides = ("data.val_fraction=0.5",)
    held_out = base_config(half, "none", "run", trainers=1)
    assert held_out["data"]["args"]["n"] >= 2 * 14 * 8


def test_synthetic_data_has_the_columns_the_tasks_read():
    vectors = synthetic_data("vectors", 64, features=8, classes=3)
    assert vectors["x"].shape == (64, 8) and vectors["label"].max() < 3
    showers = synthetic_data("showers", 4)
    assert showers["ECAL"].shape == (4, 25, 25, 25) and showers["energy"].shape == (4,)
    assert torch.all(showers["ECAL"] >= 0)


@pytest.mark.timeout(200)
@pytest.mark.parametrize("fast", ["off", "on"])
@pytest.mark.parametrize("kind", ["plain", "framework"])
def test_gan_plain_loop_and_framework_rank_time_their_window(kind, fast, tmp_path):
    # gan.fast_path on: the trainer's GPU step (FastGanTask), here uncompiled on the CPU
    s = Settings(model="tiny-3dgan", steps=2, warmup=1, batch_size=2)
    s.overrides = (f"gan.fast_path={fast}",)
    spec = {
        "kind": kind, "config": base_config(s, "none", str(tmp_path / "run"), 1),
        "warmup": 1, "steps": 2, "cudnn_benchmark": True, "out": str(tmp_path / "out.json"),
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    run_rank(path)
    record = json.loads((tmp_path / "out.json").read_text())
    (rank,) = record["ranks"]
    assert rank["trains"] and rank["samples_per_s"] > 0
    assert rank["samples_per_s"] == pytest.approx(2 * 2 / rank["window_s"])
    assert rank["ms_per_step"] == pytest.approx(1e3 * rank["window_s"] / 2)
    assert rank["cpu_ms_per_step"] > 0
    assert record["device"]["device"] == "cpu"
    if kind == "framework":
        assert rank["steps_run"] == s.epoch_steps  # the window lies inside the one epoch
        assert rank["task"] == ("FastGanTask" if fast == "on" else "GanTask")
    else:
        assert ("FastGanLosses" in rank["task"]) == (fast == "on")


def test_the_rank_entry_needs_neither_cuda_nor_optuna(tmp_path):
    s = Settings(model="mlp", steps=2, warmup=1, batch_size=8)
    spec = {
        "kind": "framework", "config": base_config(s, "none", str(tmp_path / "run"), 1),
        "warmup": 1, "steps": 2, "cudnn_benchmark": True, "out": str(tmp_path / "out.json"),
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code = (
        "import sys; from scaletrain.cli import main; "
        f"rc = main(['bench', 'scaling-rank', {str(path)!r}]); "
        "assert rc == 0, rc; assert 'optuna' not in sys.modules, 'optuna imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(tmp_path / "out.json").exists()


def test_unknown_modes_and_counts_are_one_line_errors(tmp_path, capsys):
    assert main(["bench", "scaling", "--modes", "ring", "--out", str(tmp_path)]) == 2
    assert "--modes ring: choose from allreduce" in capsys.readouterr().err
    assert main(["bench", "scaling", "--np", "0,2", "--out", str(tmp_path)]) == 2
    assert "--np '0,2'" in capsys.readouterr().err
    for bad in (["--steps", "6", "--interleave", "4"], ["--interleave", "2", "--paired"]):
        assert main(["bench", "scaling", *bad, "--out", str(tmp_path)]) == 2
        assert "--interleave" in capsys.readouterr().err
