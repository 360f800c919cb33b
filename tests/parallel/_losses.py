"""Losses the multi-process tests name by import path (`_losses:...`, beside _driver.py)."""

from __future__ import annotations

import torch


def mean_logit(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Linear in a linear model's weights: its gradient does not depend on them."""
    return outputs["logits"].mean()
