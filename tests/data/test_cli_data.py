import json
from pathlib import Path

import numpy as np

from scaletrain.cli import main
from scaletrain.data.io import check_file, read_showers


def test_simulate_writes_shards_and_refuses_to_overwrite(tmp_path: Path, capsys) -> None:
    out = tmp_path / "data"
    args = ["data", "simulate", "--out", str(out), "--n", "30", "--energies", "10,50",
            "--theta", "60:120", "--shard-size", "20", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    files = sorted(out.glob("*.h5"))
    assert [f.name for f in files] == ["showers_000.h5", "showers_001.h5"]
    assert [check_file(f).n for f in files] == [20, 10]
    block = read_showers(files[0])
    assert sorted(set(block["energy"].tolist())) == [10.0, 50.0]
    assert np.degrees(block["theta"]).min() >= 60 and np.degrees(block["theta"]).max() <= 120
    assert "30 e- showers" in capsys.readouterr().out

    before = files[0].read_bytes()
    assert main(["data", "simulate", "--out", str(out), "--n", "5", "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert files[0].read_bytes() == before


def test_simulate_rejects_bad_values(tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "d")
    assert main(["data", "simulate", "--out", out, "--n", "5", "--energies", "a:b"]) == 2
    assert main(["data", "simulate", "--out", out, "--n", "5", "--particle", "mu"]) == 2
    err = capsys.readouterr().err
    assert "--energies" in err and "unknown particle" in err


def test_inspect_summarizes_good_files_and_fails_on_bad_ones(tmp_path: Path, capsys) -> None:
    good = tmp_path / "good"
    assert main(["data", "simulate", "--out", str(good), "--n", "8", "--energies", "20",
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["data", "inspect", str(good)]) == 0
    assert "showers_000.h5" in capsys.readouterr().out
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x00" * 64)
    assert main(["data", "inspect", str(good), str(bad)]) == 2
    captured = capsys.readouterr()
    assert "showers_000.h5" in captured.out
    assert "bad.h5" in captured.err and "not a readable HDF5" in captured.err


def test_bench_sim_reports_rate_per_core(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "sim", "--energy", "10", "--n", "40", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 40 and result["showers_per_s_per_core"] > 0
