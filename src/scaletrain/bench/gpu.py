"""Device helpers shared by the benchmarks: choosing the device, naming it, peak memory."""

from __future__ import annotations

import platform

import torch

from scaletrain.errors import ConfigError


def resolve_device(device: str) -> torch.device:
    """auto (CUDA when present), cpu, cuda or cuda:N."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available")
    return dev


def device_info(dev: torch.device) -> dict:
    info = {"device": str(dev), "torch": torch.__version__, "host": platform.node()}
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info.update(name=platform.processor() or "cpu", threads=torch.get_num_threads())
    return info


def reset_peak_memory(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_memory_gib(dev: torch.device) -> float:
    if dev.type != "cuda":
        return 0.0
    return round(torch.cuda.max_memory_allocated(dev) / 2**30, 3)
