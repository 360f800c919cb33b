import json

from scaletrain.cli import main


def test_bench_hpo_shows_evolution_reaching_the_target_before_random_search(tmp_path, capsys):
    out = tmp_path / "hpo.json"
    args = ["bench", "hpo", "--function", "sphere", "--budget", "200", "--seeds", "2"]
    assert main([*args, "--population", "10", "--json", str(out)]) == 0
    assert "evaluations to target" in capsys.readouterr().out
    rows = {r["sampler"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["evolution"]["reached"] == 2
    assert rows["evolution"]["evals_to_target"] < rows["random"]["evals_to_target"]


def test_bench_hpo_refuses_unknown_samplers(capsys):
    assert main(["bench", "hpo", "--samplers", "evolution,annealing"]) == 2
    assert "annealing" in capsys.readouterr().err
