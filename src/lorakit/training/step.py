"""One training step's math: batch → conditioning → noisy latents → U-Net → loss.

No `.item()` or other host reads happen here: the loop decides when to read the loss, so
the step stays capturable (CUDA graphs) and the GPU never waits for Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from lorakit.models import BaseModel
from lorakit.training.caching import LatentCache, TextCache
from lorakit.training.config import TrainConfig
from lorakit.training.data import SampleKey, TrainItem, loss_weights, process_caption, time_ids
from lorakit.training.objective import Objective
from lorakit.training.text import encode


@dataclass
class Batch:
    latents: torch.Tensor
    captions: list[str]
    weights: torch.Tensor
    items: list[TrainItem]
    flips: list[bool]


def assemble(
    keys: Sequence[SampleKey],
    items: Sequence[TrainItem],
    latents: LatentCache,
    config: TrainConfig,
    device: torch.device,
) -> Batch:
    """Load one batch: latents (cached or live), processed captions, loss weights."""
    color = config.dataset.color_aug
    chosen = [items[k.index] for k in keys]
    stacked = torch.stack([latents.get((k.index, k.flip), k.seed if color else None) for k in keys])
    captions = [process_caption(items[k.index].caption, k.seed, config) for k in keys]
    weights = loss_weights(chosen, config.dataset.prior_loss_weight)
    flips = [k.flip for k in keys]
    # non_blocking: a blocking host→device copy waits for the GPU to finish the last step.
    return Batch(
        stacked.to(device, non_blocking=True),
        captions,
        weights.to(device, non_blocking=True),
        chosen,
        flips,
    )


class Stepper:
    """Forward passes shared by training and validation."""

    def __init__(
        self,
        base: BaseModel,
        objective: Objective,
        text_cache: TextCache | None,
        train_te: bool,
        clip_skip: int,
        device: torch.device,
    ):
        self.base, self.objective, self.text_cache = base, objective, text_cache
        self.train_te, self.clip_skip, self.device = train_te, clip_skip, device

    def conditioning(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.text_cache is not None:
            return self.text_cache.get(captions)
        with nullcontext() if self.train_te else torch.no_grad():
            return encode(self.base, captions, self.clip_skip, self.device)

    def predict(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        items: Sequence[TrainItem],
        captions: Sequence[str],
        flips: Sequence[bool] | None = None,
    ) -> torch.Tensor:
        """The U-Net's output; `flips` (default: none flipped) set SDXL's crop coordinates."""
        hidden, pooled = self.conditioning(captions)
        unet = self.base.unet
        added = None
        if self.base.is_sdxl:
            flipped = flips if flips is not None else [False] * len(items)
            ids = torch.stack([time_ids(it, f) for it, f in zip(items, flipped, strict=True)])
            added = {"text_embeds": pooled, "time_ids": ids.to(self.device, non_blocking=True)}
        out = unet(
            noisy.to(unet.dtype),
            t,
            encoder_hidden_states=hidden.to(unet.dtype),
            added_cond_kwargs=added,
        )
        return out.sample

    def loss(self, batch: Batch) -> torch.Tensor:
        latents = batch.latents
        noise = self.objective.sample_noise(latents)
        t = self.objective.sample_timesteps(latents.shape[0], latents.device)
        noisy = self.objective.add_noise(latents, noise, t)
        pred = self.predict(noisy, t, batch.items, batch.captions, batch.flips)
        target = self.objective.target(latents, noise, t)
        return self.objective.loss(pred, target, t, batch.weights)
