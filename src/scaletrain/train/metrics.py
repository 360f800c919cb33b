"""Metrics: one JSON line per record, mirrored to TensorBoard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, TextIO


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._file: TextIO | None = None  # opened at the first record, line-buffered
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # TensorBoard is optional at run time
                self._tb = None

    def log(self, step: int, epoch: int, metrics: dict[str, float], **extra: Any) -> None:
        if not self.enabled:
            return
        record = {
            "time": time.time(),
            "step": step,
            "epoch": epoch,
            **extra,
            **{k: _clean(v) for k, v in metrics.items()},
        }
        if self._file is None:
            self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 (closed in close())
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
