"""The demo: simulate showers, train a narrow 3DGAN, generate, validate — on a CPU, in minutes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rich.console import Console

from scaletrain.config import load_config

DEMO_CONFIG = "demo.yaml"


@dataclass
class DemoResult:
    out: Path
    checkpoint: Path
    generated: Path
    report: Path
    fidelity: float
    seconds: dict[str, float]


def demo_config_path() -> Path:
    return Path(str(resources.files("scaletrain") / "configs" / DEMO_CONFIG))


def run_demo(
    out: str | Path = "runs/demo",
    *,
    n_train: int = 1250,
    n_compare: int = 600,
    overrides: tuple[str, ...] = (),
    workers: int = 2,
    console: Console | None = None,
) -> DemoResult:
    """Run the whole pipeline into `out` (replacing an earlier demo there)."""
    from scaletrain.calo import validate_files
    from scaletrain.data.simulator import simulate_to_files
    from scaletrain.generate import generate_file
    from scaletrain.train.trainer import train

    console = console or Console()
    out = Path(out)
    seconds: dict[str, float] = {}
    cfg = load_config(
        demo_config_path(), [f"run.dir={out / 'train'}", f"data.path={out / 'data'}", *overrides]
    )

    def stage(name: str, text: str) -> float:
        console.rule(f"[bold]{name}[/bold]: {text}")
        return time.perf_counter()

    t = stage(
        "1/4 simulate", f"{n_train} training and {n_compare} reference electron showers, 2-500 GeV"
    )
    simulate_to_files(
        out / "data",
        n_train,
        (2.0, 500.0),
        seed=cfg.run.seed,
        shard_size=max(n_train // 2, 1),
        workers=workers,
        overwrite=True,
    )
    simulate_to_files(
        out / "reference",
        n_compare,
        (10.0, 500.0),
        seed=cfg.run.seed + 1,
        shard_size=n_compare,
        workers=workers,
        overwrite=True,
    )
    seconds["simulate"] = time.perf_counter() - t

    t = stage(
        "2/4 train", f"3DGAN (narrow), {cfg.train.epochs} epochs, batch {cfg.train.batch_size}"
    )
    result = train(cfg, overwrite=True)
    seconds["train"] = time.perf_counter() - t
    checkpoint = result.run_dir / "best.pt"

    t = stage("3/4 generate", f"{n_compare} showers, 10-500 GeV")
    generated = out / "generated.h5"
    generate_file(
        checkpoint,
        generated,
        n=n_compare,
        energies="10:500",
        seed=cfg.run.seed + 2,
        overwrite=True,
        progress=False,
    )
    seconds["generate"] = time.perf_counter() - t

    t = stage("4/4 validate", "generated vs simulated reference")
    reference = out / "reference" / "showers_000.h5"
    validation = validate_files(generated, reference, out / "report", overwrite=True)
    seconds["validate"] = time.perf_counter() - t
    return DemoResult(out, checkpoint, generated, out / "report", validation.fidelity, seconds)
