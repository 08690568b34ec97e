"""LoRA files with known weights for the resize / merge / extract tests.

Every tensor comes from a seeded generator, so a file is the same on every run, and the
exact update ΔW of each module is known to the test that made it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lorakit.models import BaseModel
from lorakit.network.config import LoRAConfig
from lorakit.network.lora import LoRANetwork
from lorakit.network.pairs import read_lora

# (up, down, generator) → (up, down): reshapes a module's random factors.
Shaper = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def save_lora(
    base: BaseModel,
    path: Path,
    config: LoRAConfig,
    *,
    seed: int = 0,
    scale: float = 0.05,
    shape: Shaper | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """A LoRA for `base` with seeded Gaussian factors (`scale` on up), optionally reshaped."""
    network = LoRANetwork.inject(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.loras:
            down, up = module.lora_down.weight, module.lora_up.weight
            new_down = torch.randn(down.shape, generator=generator).reshape(down.shape[0], -1)
            new_up = torch.randn(up.shape, generator=generator).reshape(up.shape[0], -1) * scale
            if shape is not None:
                new_up, new_down = shape(new_up, new_down, generator)
            down.copy_(new_down.reshape(down.shape))
            up.copy_(new_up.reshape(up.shape))
    network.save(path, dtype=dtype)
    network.remove()
    return path


def decaying(ratio: float) -> Shaper:
    """Factors whose rank components fall off by `ratio` each, then mixed by a random
    rotation: a spectrum like a trained LoRA's, with no order left in the raw components."""

    def shape(
        up: torch.Tensor, down: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rank = down.shape[0]
        weights = ratio ** torch.arange(rank, dtype=torch.float32)
        rotation, _ = torch.linalg.qr(torch.randn(rank, rank, generator=generator))
        down = down / down.norm(dim=1, keepdim=True)
        up = up / up.norm(dim=0, keepdim=True) * up.norm() / rank**0.5
        return up * weights @ rotation, rotation.T @ down

    return shape


def deltas(path: Path) -> dict[str, torch.Tensor]:
    """Every module's ΔW = alpha/rank · up @ down (a matrix), from the file."""
    return {name: pair.delta() for name, pair in read_lora(path).pairs.items()}
