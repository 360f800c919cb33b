"""Generate showers with a trained GAN generator, in batches, streamed to HDF5."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scaletrain.config import from_dict
from scaletrain.errors import CheckpointError, ConfigError, RunDirError
from scaletrain.models.registry import build_models
from scaletrain.tasks import build_task
from scaletrain.tasks.gan import GanTask
from scaletrain.train.checkpoint import load_checkpoint, model_states


@dataclass
class GenerateResult:
    path: Path
    n: int
    seconds: float
    showers_per_s: float
    device: str


def parse_energies(spec: str) -> float | tuple[float, float] | list[float]:
    """`100` (fixed), `10:500` (flat in [10, 500]) or `10,50,100` (cycled through)."""
    try:
        if ":" in spec:
            lo, hi = (float(x) for x in spec.split(":"))
            if not 0 < lo < hi:
                raise ValueError
            return (lo, hi)
        if "," in spec:
            values = [float(x) for x in spec.split(",") if x.strip()]
            if not values or min(values) <= 0:
                raise ValueError
            return values
        value = float(spec)
        if value <= 0:
            raise ValueError
        return value
    except ValueError:
        raise ConfigError(
            f"energies {spec!r}: use a positive number, LO:HI (flat, LO < HI) or a list A,B,C"
        ) from None


def energies_for(
    spec: float | tuple[float, float] | list[float], n: int, rng: np.random.Generator
) -> np.ndarray:
    if isinstance(spec, tuple):
        return rng.uniform(spec[0], spec[1], n).astype(np.float32)
    if isinstance(spec, list):
        return np.resize(np.asarray(spec, np.float32), n)
    return np.full(n, spec, np.float32)


def load_generator_task(checkpoint: str | Path, device: str = "auto") -> GanTask:
    """Rebuild the GAN task of a checkpoint with its trained generator, in eval mode."""
    state = load_checkpoint(checkpoint)
    try:
        cfg = from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{checkpoint}: its stored config is invalid ({exc})") from None
    if cfg.task != "gan":
        raise CheckpointError(f"{checkpoint}: a {cfg.task} model, not a GAN: nothing to generate")
    dev = torch.device(
        "cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    )
    if device == "cuda" and dev.type != "cuda":
        raise ConfigError("--device cuda: no CUDA device is available")
    models = {k: m.to(dev) for k, m in build_models(cfg.model.name, cfg.model.args).items()}
    try:
        models["generator"].load_state_dict(
            model_states(state, ["generator"], checkpoint)["generator"]
        )
    except RuntimeError as exc:
        raise CheckpointError(
            f"{checkpoint}: weights do not fit the model ({str(exc).splitlines()[0][:120]})"
        ) from None
    task = build_task(cfg, models, dev)
    assert isinstance(task, GanTask)
    task.generator.eval()
    return task


def generate_like(
    task: GanTask, reference: dict[str, np.ndarray], seed: int = 0, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Showers at the same primary energies as `reference` (for validation during training)."""
    was_training = task.generator.training
    task.generator.eval()
    rng = torch.Generator(device=task.device)
    rng.manual_seed(seed)
    energy = torch.as_tensor(reference["energy"], dtype=torch.float32)
    parts = [
        task.generate(energy[i : i + batch_size], rng).cpu().numpy()
        for i in range(0, len(energy), batch_size)
    ]
    task.generator.train(was_training)
    n = len(energy)
    return {
        "ECAL": np.concatenate(parts) if parts else np.empty((0, 25, 25, 25), np.float32),
        "energy": energy.numpy(),
        "theta": np.asarray(reference.get("theta", np.full(n, np.pi / 2)), np.float32),
        "pdg": np.asarray(reference.get("pdg", np.full(n, 11)), np.int32),
    }


def generate_file(
    checkpoint: str | Path,
    out: str | Path,
    *,
    n: int,
    energies: str = "10:500",
    batch_size: int = 1024,
    device: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    fast: bool | None = None,
) -> GenerateResult:
    """Write `n` generated showers to `out` in the 3DGAN HDF5 layout.

    fast: the bf16 compiled fast path of `scaletrain.fastpath` with an asynchronous writer;
    None means on CUDA only.
    """
    from scaletrain.data.io import ShowerWriter

    out = Path(out)
    if out.exists() and not overwrite:
        raise RunDirError(f"{out} exists; use --overwrite to replace it")
    if n <= 0 or batch_size <= 0:
        raise ConfigError("--n and --batch-size must be positive")
    spec = parse_energies(energies)
    task = load_generator_task(checkpoint, device)
    energy = energies_for(spec, n, np.random.default_rng(seed))
    rng = torch.Generator(device=task.device)
    rng.manual_seed(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = ShowerWriter(
        out, n, metadata={"generator": str(checkpoint), "seed": seed, "energies": energies}
    )
    t0 = time.perf_counter()
    if fast is None:
        from scaletrain.models.fast_generator import supports

        fast = task.device.type == "cuda" and supports(task.generator)
    try:
        from scaletrain.data._progress import progress_bar

        with progress_bar(n, "generating", enabled=progress) as advance:
            if fast:
                _generate_fast(task, writer, energy, rng, batch_size, advance)
            else:
                for start in range(0, n, batch_size):
                    e = torch.from_numpy(energy[start : start + batch_size])
                    images = task.generate(e, rng).cpu().numpy()
                    writer.write(start, _block(images, e.numpy()))
                    advance(len(e))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    seconds = time.perf_counter() - t0
    return GenerateResult(out, n, seconds, n / max(seconds, 1e-9), str(task.device))


def _block(images: np.ndarray, energies: np.ndarray) -> dict[str, np.ndarray]:
    m = len(energies)
    return {
        "ECAL": images,
        "energy": energies,
        "theta": np.full(m, np.pi / 2, np.float32),
        "pdg": np.full(m, 11, np.int32),
    }


def _generate_fast(task: GanTask, writer, energy: np.ndarray, rng, batch_size: int, advance):
    """The fast path: same latent draws as task.generate, bf16 graph, writer thread."""
    from scaletrain.fastpath import FastGenerate, stream_to_writer

    fast = FastGenerate(task.generator, batch_size, compile=task.device.type == "cuda")
    scale = task.cfg.image_scale

    def generate(start: int, m: int):
        e = torch.from_numpy(energy[start : start + m])
        images = fast(task.sample_latent(e.to(task.device), rng))
        return (images / scale if scale != 1.0 else images), e.numpy()

    def write(start: int, images: np.ndarray, energies: np.ndarray) -> None:
        writer.write(start, _block(images, energies))

    cuda = task.device.type == "cuda"
    stream_to_writer(generate, write, len(energy), batch_size, advance, pinned=cuda)
