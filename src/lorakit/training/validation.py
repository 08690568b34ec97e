"""A validation loss that means the same thing every epoch.

The training loss jumps with the random timestep and noise of each step, so epochs cannot
be compared by it. Here every validation image gets fixed noise and a fixed, evenly spread
set of timesteps (drawn once from `validation.seed`), no flip, no caption shuffle or
dropout: the only thing that changes between epochs is the LoRA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lorakit.progress import task
from lorakit.training.data import TrainItem
from lorakit.training.objective import Objective

Predict = Callable[[torch.Tensor, torch.Tensor, list[TrainItem]], torch.Tensor]


class Validator:
    """Fixed (latent, noise, timestep) triples per validation image."""

    def __init__(
        self,
        items: Sequence[TrainItem],
        latents: Sequence[torch.Tensor],
        objective: Objective,
        timesteps: int,
        seed: int,
        device: torch.device,
    ):
        self.items = list(items)
        self.objective = objective
        generator = torch.Generator().manual_seed(seed)
        spread = torch.linspace(0, objective.num_timesteps - 1, timesteps + 2)[1:-1].long()
        self.cases = []
        for item, latent in zip(self.items, latents, strict=True):
            latent = latent.unsqueeze(0).to(device)
            for t in spread:
                noise = torch.randn(latent.shape, generator=generator).to(device)
                self.cases.append((item, latent, noise, t.view(1).to(device)))

    @torch.no_grad()
    def loss(self, predict: Predict) -> float:
        """Mean plain MSE over all fixed cases (no min-SNR weighting: a stable yardstick)."""
        if not self.cases:
            return float("nan")
        total = torch.zeros((), device=self.cases[0][1].device)
        # Each case is a full U-Net pass: minutes per epoch for a full-size model on a CPU.
        with task("validation", total=len(self.cases)) as advance:
            for item, latent, noise, t in self.cases:
                noisy = self.objective.add_noise(latent, noise, t)
                target = self.objective.target(latent, noise, t)
                pred = predict(noisy, t, [item])
                total = total + (pred.float() - target.float()).pow(2).mean()
                advance()
        return float(total) / len(self.cases)
