"""`scaletrain bench ...`: throughput benchmarks (sim here; gen, train, scaling beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ._app import bench_app

TABLE_WIDTH = 222  # characters the scaling table is printed in, at least


@bench_app.command("sim")
def bench_sim(
    energy: float = typer.Option(100.0, help="Primary energy of every shower, GeV."),
    n: int = typer.Option(2000, help="Number of showers to simulate."),
    workers: int = typer.Option(1, help="Worker processes."),
    particle: str = typer.Option("e-", help="Particle: e-, gamma or pi+."),
    spots: str = typer.Option(
        "sampling", help="Spot model: 'sampling' (default, fast) or 'gflash' (reference)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Simulator throughput: showers/s and showers/s per core."""
    from scaletrain.bench.simulate import bench_simulation
    from scaletrain.data.simulator import SimConfig

    result = bench_simulation(
        energy, n, workers=workers, particle=particle, config=SimConfig(spots=spots)
    )
    table = Table(title="simulator throughput")
    for key in ("particle", "energy GeV", "showers", "workers", "spots", "seconds"):
        table.add_column(key, justify="right")
    table.add_column("showers/s", justify="right")
    table.add_column("per core", justify="right")
    table.add_row(
        result.particle, f"{result.energy_gev:g}", str(result.n), str(result.workers),
        result.spots, f"{result.seconds:.2f}", f"{result.showers_per_s:,.0f}",
        f"{result.showers_per_s_per_core:,.0f}",
    )  # fmt: skip
    Console().print(table)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def _sizes(spec: str) -> tuple[int, ...]:
    from scaletrain.errors import ConfigError

    try:
        sizes = tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise ConfigError(f"--batch-size {spec!r}: use positive integers, e.g. 8192 or 4096,16384")
    return sizes


def _write_json(path: Path | None, payload: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2) + "\n")


def _table(title: str, rows: list, columns: dict[str, str]) -> Table:
    table = Table(title=title)
    for header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(getattr(row, key)) for key, fmt in (
            (k.split(":")[0], "{:" + (k.split(":")[1] if ":" in k else "") + "}")
            for k in columns.values()
        )))  # fmt: skip
    return table


@bench_app.command("gen")
def bench_gen(
    batch_size: str = typer.Option("8192", help="Fast-path batch sizes, comma separated."),
    baseline_batch_size: int = typer.Option(None, help="Baseline batch (default: the first)."),
    iters: int = typer.Option(20, help="Timed batches per path."),
    warmup: int = typer.Option(3, help="Untimed batches first (compilation, autotuning)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", help="Fast-path precision: bf16, fp16 or fp32."),
    compile: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile (default: on CUDA).", show_default=False
    ),
    cuda_graph: bool = typer.Option(
        True, "--cuda-graph/--no-cuda-graph", help="Replay a CUDA graph."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="Trained GAN checkpoint (default: random weights)."
    ),
    physics: int = typer.Option(0, help="Showers for the calo.compare physics check (0: skip)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Generation showers/s: fast path (bf16, compiled, graphed) vs the eager fp32 baseline."""
    from scaletrain.bench.gen_speed import bench_generation

    if precision not in ("bf16", "fp16", "fp32"):
        from scaletrain.errors import ConfigError

        raise ConfigError(f"--precision {precision!r}: use bf16, fp16 or fp32")
    generator = None
    if checkpoint is not None:
        from scaletrain.generate import load_generator_task

        generator = load_generator_task(checkpoint, "cpu").generator
    result = bench_generation(
        _sizes(batch_size), baseline_batch_size=baseline_batch_size, iters=iters,
        warmup=warmup, device=device, precision=precision, compile=compile,
        cuda_graph=cuda_graph, generator=generator, physics_n=physics,
    )  # fmt: skip
    name = result.device.get("name", result.device["device"])
    Console().print(_table(f"generation on {name}", result.rows, {
        "path": "path", "precision": "precision", "batch": "batch_size",
        "showers/s": "showers_per_s:,.0f", "ms/batch": "ms_per_batch:.2f",
        "peak GiB": "peak_memory_gib:.2f", "TFLOP/s model": "model_tflops:.1f",
        "TFLOP/s executed": "executed_tflops:.1f", "speed-up": "speedup:.2f",
    }))  # fmt: skip
    Console().print(
        f"fast vs eager on the same latents: relative L2 error {result.check['rel_l2_error']:.2e}"
    )
    _write_json(json_out, result.to_dict())


@bench_app.command("train")
def bench_train(
    batch_size: str = typer.Option("1024", help="Fast-path batch sizes, comma separated."),
    baseline_batch_size: int = typer.Option(128, help="Batch of the eager fp32 baseline."),
    iters: int = typer.Option(10, help="Timed steps per path."),
    warmup: int = typer.Option(3, help="Untimed steps first (compilation, autotuning)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("bf16", help="Fast-path precision: bf16, fp16 or fp32."),
    compile: bool = typer.Option(
        None, "--compile/--no-compile", help="torch.compile (default: on CUDA).", show_default=False
    ),
    n_data: int = typer.Option(None, help="Showers held on the device (default: 4 batches)."),
    loss_check: int = typer.Option(
        0, help="Steps of the baseline-vs-fast loss comparison (0: skip)."
    ),
    loss_check_batch: int = typer.Option(128, help="Batch of the loss comparison."),
    loss_check_fidelity: int = typer.Option(
        2000,
        help="Showers for the fidelity of each path's generator, scored at 4 steps of the "
        "comparison's second half (0: skip).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Training samples/s: fast step (GPU data, bf16, compiled) vs the eager fp32 loop."""
    from scaletrain.bench.train_speed import bench_training

    if precision not in ("bf16", "fp16", "fp32"):
        from scaletrain.errors import ConfigError

        raise ConfigError(f"--precision {precision!r}: use bf16, fp16 or fp32")

    def on_row(rows: list) -> None:
        Console().print(f"{rows[-1]}")
        _write_json(json_out, {"partial": True, "rows": [vars(r) for r in rows]})

    result = bench_training(
        _sizes(batch_size), baseline_batch_size=baseline_batch_size, iters=iters,
        warmup=warmup, device=device, precision=precision, compile=compile, n_data=n_data,
        loss_check_steps=loss_check, loss_check_batch=loss_check_batch,
        loss_check_fidelity=loss_check_fidelity, on_row=on_row,
    )  # fmt: skip
    name = result.device.get("name", result.device["device"])
    Console().print(_table(f"training on {name}", result.rows, {
        "path": "path", "precision": "precision", "batch": "batch_size",
        "samples/s": "samples_per_s:,.0f", "ms/step": "ms_per_step:.1f",
        "peak GiB": "peak_memory_gib:.2f", "TFLOP/s model": "model_tflops:.1f",
        "speed-up": "speedup:.2f",
    }))  # fmt: skip
    if result.loss_check:
        for loss, v in result.loss_check["losses"].items():
            Console().print(
                f"{loss}: eager {v['eager_last_half_mean']:.4g}, "
                f"fast {v['fast_last_half_mean']:.4g} (step-to-step std {v['step_std']:.3g})"
            )
        if "fidelity" in result.loss_check:
            check = result.loss_check
            for name, curve in check["fidelity_curve"].items():
                Console().print(
                    f"fidelity of {name} at steps {check['fidelity_steps']}: "
                    + ", ".join(f"{v:.4g}" for v in curve)
                    + f" (median {check['fidelity'][name]:.4g})"
                )
    _write_json(json_out, result.to_dict())


@bench_app.command("hpo")
def bench_hpo(
    samplers: str = typer.Option(
        "evolution,random", "--samplers", help="Comma separated: evolution, random, tpe, gp..."
    ),
    function: str = typer.Option("rosenbrock", "--function", help="rosenbrock or sphere."),
    dim: int = typer.Option(4, "--dim", min=2, help="Dimensions of the function."),
    budget: int = typer.Option(300, "--budget", min=1, help="Evaluations per run."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Runs per sampler (seeds 0..N-1)."),
    target: float = typer.Option(None, "--target", help="Value to reach (default per function)."),
    population: int = typer.Option(16, "--population", min=2, help="Evolution: population."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Samplers on an analytic function: evaluations to reach a target, averaged over seeds."""
    from scaletrain.errors import ConfigError
    from scaletrain.hpo.bench import FUNCTIONS, bench_samplers
    from scaletrain.hpo.samplers import SAMPLERS

    names = tuple(s.strip() for s in samplers.split(",") if s.strip())
    unknown = [s for s in names if s not in SAMPLERS]
    if unknown or not names:
        raise ConfigError(f"--samplers {samplers!r}: choose from {', '.join(SAMPLERS)}")
    if function not in FUNCTIONS:
        raise ConfigError(f"--function {function!r}: choose from {', '.join(FUNCTIONS)}")
    result = bench_samplers(
        names, function=function, dim=dim, budget=budget, seeds=seeds, target=target,
        population=population,
    )  # fmt: skip
    title = f"{function} in {dim}-D, target {result.target:g}, budget {budget}, {seeds} seeds"
    Console().print(_table(title, result.rows, {
        "sampler": "sampler", "reached": "reached", "evaluations to target": "evals_to_target:.1f",
        "median best": "best_median:.4g", "seconds": "seconds:.1f",
    }))  # fmt: skip
    Console().print("(a run that never reaches the target counts the whole budget)")
    _write_json(json_out, result.to_dict())


@bench_app.command("scaling")
def bench_scaling(
    modes: str = typer.Option(
        "allreduce,downpour,easgd,gem", "--modes", help="Modes, comma separated."
    ),
    np_list: str = typer.Option("1,2,3", "--np", help="Process counts N, comma separated."),
    model: str = typer.Option(
        "mlp", "--model", help="mlp (small supervised, CPU), calo-cnn, tiny-3dgan or 3dgan (GAN)."
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Batch per process (default: mlp 256, calo-cnn 32, tiny-3dgan 16, 3dgan 128).",
    ),
    steps: int = typer.Option(50, "--steps", min=1, help="Timed steps per process."),
    warmup: int = typer.Option(5, "--warmup", min=1, help="Untimed steps before (and after)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (one GPU per rank)."),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        help="Torch threads per process (default: 1 on CPU; on CUDA cores / largest N).",
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast)."),
    data_on_device: bool = typer.Option(
        True,
        "--data-on-device/--data-on-host",
        help="Keep the synthetic data on the GPU (no host-to-device copy per step).",
    ),
    cudnn_benchmark: bool = typer.Option(
        True,
        "--cudnn-benchmark/--no-cudnn-benchmark",
        help="cuDNN autotuning (CUDA), in the plain loop and the framework alike.",
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Config override for every run, e.g. parallel.sync_every=4."
    ),
    repeats: int = typer.Option(1, "--repeats", min=1, help="Runs per point; the median counts."),
    seed: int = typer.Option(0, "--seed", help="Seed of weights and data."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds allowed per run."),
    mpiexec: str = typer.Option(
        None, "--mpiexec", help="MPI launcher (default: the one `--np` of train uses)."
    ),
    mpiexec_args: str = typer.Option(
        "", "--mpiexec-args", help="Extra launcher arguments, e.g. '--oversubscribe'."
    ),
    out: Path = typer.Option(
        Path("bench-scaling"), "--out", help="Directory for scaling.json, .md, .png and logs/."
    ),
    keep_runs: bool = typer.Option(False, "--keep-runs", help="Keep the runs' directories."),
    concurrent_plain: bool = typer.Option(
        False,
        "--concurrent-plain",
        help="Also run N plain loops at once for each N > 1: what the machine itself leaves "
        "each of N busy processes, to tell its limits from the framework's.",
    ),
    paired: bool = typer.Option(
        False,
        "--paired",
        help="Every training process also runs the plain loop itself, just before and after "
        "its framework window: each worker is compared with itself (a process's speed varies "
        "from start to start), and the targets are judged on that.",
    ),
    interleave: int = typer.Option(
        0,
        "--interleave",
        metavar="STEPS",
        help="Every training process alternates spans of STEPS framework steps with STEPS "
        "steps of the plain loop, in the same process, the training processes together: "
        "each worker is compared with itself over the same seconds (a busy or shared host's "
        "speed drifts), and the targets are judged on that. At most half of --steps.",
    ),
) -> None:
    """Samples/s, speedup, efficiency and staleness of each mode on N processes, against a
    plain PyTorch loop of the same model (also gives the framework's 1-process overhead)."""
    import shlex

    from scaletrain.bench.gpu import resolve_device
    from scaletrain.bench.scaling import Settings, default_threads
    from scaletrain.bench.scaling import bench_scaling as run_bench
    from scaletrain.bench.scaling_results import COLUMNS, table_rows
    from scaletrain.errors import ConfigError

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: use auto, cpu or cuda")
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"--precision {precision!r}: use fp32 or bf16")
    dev = resolve_device(device).type
    nps = _counts(np_list)
    settings = Settings(
        modes=tuple(m.strip() for m in modes.split(",") if m.strip()), nps=nps, model=model,
        batch_size=batch_size or 0, steps=steps, warmup=warmup, device=dev,
        threads=threads or default_threads(dev, nps), precision=precision,
        data_on_device=data_on_device, cudnn_benchmark=cudnn_benchmark, overrides=tuple(set_),
        repeats=repeats, seed=seed, timeout_s=timeout, mpiexec=mpiexec,
        mpiexec_args=tuple(shlex.split(mpiexec_args)), concurrent_plain=concurrent_plain,
        paired=paired, interleave=interleave,
    )  # fmt: skip
    console = Console()

    def on_run(row, repeat: int) -> None:
        rate = f"{row.samples_per_s:,.1f} samples/s" if row.ok else row.note
        if row.per_worker_vs_own is not None:  # --paired, --interleave
            rate += f", {row.per_worker_vs_own:.1%} of own plain loop"
        run = f" run {repeat + 1}/{repeats}" if repeats > 1 else ""
        console.print(f"{row.mode} N={row.processes}{run}: {rate} ({row.seconds:.0f} s)")

    result = run_bench(settings, out, keep_runs=keep_runs, on_run=on_run)
    table = Table(title=f"scaling: {model} on {result.device.get('name') or dev}")
    for header, (_, _, short) in COLUMNS.items():
        table.add_column(short, justify="left" if header in ("mode", "target") else "right")
    for cells in table_rows(result):
        table.add_row(*cells)
    # 17 columns: at a log's or a narrow terminal's 80 characters rich would cut every cell
    Console(width=max(console.width, TABLE_WIDTH)).print(table)
    for target in result.targets.values():
        console.print(f"{target['target']}: {target['status']}")
    console.print(f"written: {out / 'scaling.json'}, {out / 'scaling.md'}, {out / 'scaling.png'}")
    if result.failed:
        raise typer.Exit(1)


@bench_app.command("scaling-rank", hidden=True)
def bench_scaling_rank(spec: Path = typer.Argument(..., help="Spec written by bench scaling.")):
    """One process of a `bench scaling` measurement (started by it, under mpiexec)."""
    from scaletrain.bench.scaling_ranks import run_rank

    run_rank(spec)


def _counts(spec: str) -> tuple[int, ...]:
    from scaletrain.errors import ConfigError

    try:
        counts = tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) <= 0:
        raise ConfigError(f"--np {spec!r}: use positive integers, e.g. 1,2,3")
    return counts
