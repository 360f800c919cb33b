"""The GPU fast paths, exercised on the CPU with tiny sizes: exactness, benches, streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scaletrain.bench.fast_train import FastGanStep
from scaletrain.bench.gen_speed import bench_generation
from scaletrain.bench.train_speed import bench_training
from scaletrain.cli import app
from scaletrain.config import GanConfig
from scaletrain.fastpath import FastGenerate, stream_to_writer
from scaletrain.models.fast_generator import FastGenerator, supports
from scaletrain.models.threedgan import Generator, build_3dgan


def _generator_with_statistics(seed: int, **kw) -> Generator:
    torch.manual_seed(seed)
    g = Generator(**kw)
    for bn in (g.body[3], g.body[8]):  # non-trivial eval statistics and affine terms
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return g


@pytest.mark.parametrize("frozen", [False, True])
def test_fast_generator_equals_the_published_one_in_float64(frozen):
    g = _generator_with_statistics(1).double().eval()
    z = torch.randn(3, 200, dtype=torch.float64) * 3
    ref = g(z)
    out = FastGenerator(g, frozen=frozen)(z)
    assert out.shape == ref.shape == (3, 1, 25, 25, 25)
    assert ((out - ref).norm() / ref.norm()).item() < 1e-12


def test_fast_generator_trains_like_the_original():
    """Training mode: batch statistics and the gradients of every parameter agree."""
    g = _generator_with_statistics(2, filters=(16, 6, 6)).double().train()
    z = torch.randn(4, 200, dtype=torch.float64)
    weights = torch.rand(4, 1, 25, 25, 25, dtype=torch.float64)
    (g(z) * weights).sum().backward()
    ref = {n: p.grad.clone() for n, p in g.named_parameters()}
    g.zero_grad()
    (FastGenerator(g)(z) * weights).sum().backward()
    for name, p in g.named_parameters():  # float64, against each gradient's largest entry
        assert (p.grad - ref[name]).abs().max() <= 1e-12 * ref[name].abs().max(), name


def test_fast_generator_handles_other_widths_and_rejects_other_models():
    g = _generator_with_statistics(3, latent_size=16, filters=(4, 2, 2)).eval()
    z = torch.randn(5, 16)
    out = FastGenerate(g, 8, dtype=torch.float32, compile=False)(z)
    assert out.shape == (5, 1, 25, 25, 25)
    assert torch.allclose(out, g(z), rtol=1e-4, atol=1e-5)
    assert not supports(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError):
        FastGenerator(torch.nn.Sequential())


def test_bf16_fast_path_matches_fp32_eager_within_bf16_rounding():
    g = _generator_with_statistics(4).eval()
    z = torch.randn(4, 200) * 2
    with torch.no_grad():
        ref = g(z)
        out = FastGenerate(g, 4, compile=False)(z)
    assert out.dtype == torch.float32
    assert ((out - ref).norm() / ref.norm()).item() < 3e-2


def test_bench_gen_on_cpu_reports_both_paths():
    result = bench_generation((4,), iters=1, warmup=0, precision="fp32", check_n=4).to_dict()
    assert result["model_gflop_per_shower"] == pytest.approx(0.511, abs=0.01)
    assert result["fast_gflop_per_shower"] < 0.2  # the re-expression's saving
    base, fast = result["rows"]
    assert (base["path"], fast["path"]) == ("eager-fp32", "fast")
    for row in (base, fast):
        for key in ("showers_per_s", "ms_per_batch", "peak_memory_gib", "model_tflops"):
            assert row[key] >= 0
    assert fast["speedup"] > 0
    assert result["check"]["rel_l2_error"] < 1e-4  # fp32 fast path: rounding only


def test_bench_train_on_cpu_reports_both_paths_and_losses():
    result = bench_training(
        (2,), baseline_batch_size=2, iters=1, warmup=0, precision="fp32", n_data=8,
        loss_check_steps=2, loss_check_batch=2, loss_check_fidelity=64,
        model_args={"latent_size": 8, "generator_filters": (4, 2, 2),
                    "discriminator_filters": (2, 2, 2, 2)},
    ).to_dict()  # fmt: skip
    base, fast = result["rows"]
    assert base["path"] == "eager-fp32" and fast["path"] == "fast"
    assert fast["samples_per_s"] > 0 and fast["speedup"] > 0
    losses = result["loss_check"]["losses"]
    assert set(losses) == {"d_loss", "d_bce", "d_energy_mape", "g_loss", "g_bce", "g_ecal_mape"}
    assert all(np.isfinite(v["fast_last_half_mean"]) for v in losses.values())
    check = result["loss_check"]  # each trained generator vs held-out simulated showers
    assert set(check["fidelity"]) == {"eager", "fast"}
    assert all(np.isfinite(v) and v > 0 for v in check["fidelity"].values())
    assert check["fidelity_steps"] == [2]  # second half of 2 steps: scored once
    assert all(len(curve) == 1 for curve in check["fidelity_curve"].values())


def test_fast_gan_step_first_losses_match_the_task_at_the_same_weights():
    """Before any update both steps see the same models: the D loss' BCE starts at log 2."""
    models = build_3dgan(8, (4, 2, 2), (2, 2, 2, 2), 0.0)
    step = FastGanStep(models["generator"], models["discriminator"], GanConfig(latent_size=8),
                       precision="fp32", compile=False)  # fmt: skip
    losses = step.step(torch.rand(4, 1, 25, 25, 25) * 0.01, torch.full((4,), 100.0))
    assert losses.shape == (6,) and torch.isfinite(losses).all()
    assert abs(losses[1].item() - np.log(2)) < 0.3


def test_cli_bench_gen_writes_json(tmp_path):
    out = tmp_path / "gen.json"
    result = CliRunner().invoke(app, [
        "bench", "gen", "--batch-size", "2", "--iters", "1", "--warmup", "0",
        "--precision", "fp32", "--device", "cpu", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"device", "rows", "check", "model_gflop_per_shower"} <= set(data)


def test_stream_to_writer_writes_every_block_in_order():
    written = {}

    def generate(start, m):
        return torch.full((m, 1, 25, 25, 25), float(start)), np.arange(start, start + m)

    def write(start, images, energies):
        written[start] = (images[:, 0, 0, 0].copy(), energies)

    stream_to_writer(generate, write, 10, 4)
    assert sorted(written) == [0, 4, 8]
    assert written[8][0].tolist() == [8.0, 8.0]
    assert written[4][1].tolist() == [4, 5, 6, 7]


def test_stream_to_writer_reraises_writer_errors():
    def write(start, images, energies):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        stream_to_writer(lambda s, m: (torch.zeros(m, 25, 25, 25), np.zeros(m)), write, 12, 4)
