"""The report on disk, validate_files and the `scaletrain validate` command."""

from __future__ import annotations

import json
import re

import pytest

from scaletrain.calo import compare, validate_files
from scaletrain.calo.report import write_report
from scaletrain.cli import main
from scaletrain.errors import DataError, RunDirError


@pytest.fixture(scope="module")
def written(small_pair, tmp_path_factory):
    gen, ref = small_pair
    out = tmp_path_factory.mktemp("report")
    result = compare(gen, ref)
    write_report(result, out)
    return result, out


def test_report_writes_markdown_html_json_and_plots(written):
    _, out = written
    for name in ("report.md", "report.html", "scores.json", "longitudinal.png", "hits.png"):
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp"))


def test_html_shows_every_plot_and_only_existing_ones(written):
    _, out = written
    page = (out / "report.html").read_text()
    shown = set(re.findall(r'<img src="([^"]+)"', page))
    assert shown == {p.name for p in out.glob("*.png")}
    assert "<table>" in page


def test_json_holds_every_score(written):
    result, out = written
    scores = json.loads((out / "scores.json").read_text())
    assert scores["fidelity"] == pytest.approx(result.fidelity)
    assert set(scores["bins"]) == {"50 GeV", "200 GeV"}
    assert 0.0 <= scores["overall"]["auc"] <= 1.0


def test_report_refuses_a_non_empty_directory_unless_overwrite(written):
    result, out = written
    with pytest.raises(RunDirError, match="not empty"):
        write_report(result, out)
    write_report(result, out, overwrite=True)


def test_validate_files_reads_files_and_limits_showers(small_files, tmp_path):
    gen, ref = small_files
    result = validate_files(gen, ref, tmp_path / "rep", max_showers=100)
    assert result.scores["overall"]["n_ref"] == 100
    assert (tmp_path / "rep" / "report.html").exists()


def test_validate_files_rejects_a_bad_file(small_files, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"bad\.h5"):
        validate_files(bad, small_files[1])


def test_cli_prints_the_table_and_writes_the_report(small_files, tmp_path, capsys):
    gen, ref = small_files
    rep = tmp_path / "rep"
    code = main(["validate", str(gen), "--reference", str(ref), "--report", str(rep)])
    out = capsys.readouterr().out
    assert code == 0
    assert "fidelity" in out and "200 GeV" in out and "AUC" in out
    assert str(rep / "report.html") in out.replace("\n", "")
    # a second run must not overwrite the report
    assert main(["validate", str(gen), "--reference", str(ref), "--report", str(rep)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_reports_a_missing_file_in_one_line(small_files, tmp_path, capsys):
    code = main(["validate", str(tmp_path / "nope.h5"), "--reference", str(small_files[1])])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope.h5" in err


def test_cli_takes_energy_bin_edges(small_files, capsys):
    gen, ref = small_files
    assert main(["validate", str(gen), "-r", str(ref), "--energy-bins", "10,100,400"]) == 0
    assert "100-400 GeV" in capsys.readouterr().out
    assert main(["validate", str(gen), "-r", str(ref), "--energy-bins", "10,x"]) == 2
