"""SD1.5/SDXL's side of `pick`'s signals (`lorakit.inference.signals.SignalModel`).

The calls and their order are those the signals always made on SD (DDIM pictures at CFG 5,
the training objective's noise schedule, the training step's U-Net prediction, kohya
LoRAs injected as `generate` does), so SD figures stay what they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler

from lorakit.inference.generate import applied_loras, load_for_inference
from lorakit.inference.prompt import LoraRef
from lorakit.models import BaseModel
from lorakit.training.config import TrainConfig
from lorakit.training.data import TrainItem
from lorakit.training.objective import Objective
from lorakit.training.runtime import prediction_type
from lorakit.training.step import Stepper

GUIDANCE = 5.0  # classifier-free guidance of the pictures (as the tiny world's classifier)


class SDSignals:
    """A loaded SD base, its training objective and the training step's prediction."""

    def __init__(self, base: BaseModel, config: TrainConfig) -> None:
        self.model = base
        self.device = base.unet.device
        self.objective = Objective(
            base.scheduler_config, prediction_type(config, base), self.device
        )
        self.stepper = Stepper(
            base, self.objective, None, False, config.training.clip_skip, self.device
        )

    @classmethod
    def load(cls, config: TrainConfig, summary: dict[str, Any], device: str | None) -> SDSignals:
        """The run's base (the summary's path, else the config's) on `device`."""
        return cls(
            load_for_inference(summary.get("base_model") or config.model.path, device), config
        )

    @torch.no_grad()
    def pictures(
        self, prompts: list[str], size: tuple[int, int], steps: int, seed: int
    ) -> torch.Tensor:
        """Latents the model (with whatever LoRA is applied) draws for `prompts` (DDIM), one
        fixed seed per prompt, so every epoch starts from the same noise."""
        base = self.model
        pipe = base.pipeline(DDIMScheduler.from_config(base.scheduler_config))
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        out = pipe(
            prompts,
            width=size[0],
            height=size[1],
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            generator=generators,
            output_type="latent",
        )
        return out.images.float()

    def levels(self, count: int) -> torch.Tensor:
        """`count` timestep indices evenly spread inside the schedule."""
        return torch.linspace(0, self.objective.num_timesteps - 1, count + 2)[1:-1].long()

    def add_noise(
        self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return self.objective.add_noise(latents, noise, t)

    def predict(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        items: Sequence[TrainItem],
        prompts: Sequence[str],
    ) -> torch.Tensor:
        """The U-Net's output, as the training step predicts it."""
        return self.stepper.predict(noisy, t, items, prompts)

    def applied(self, lora: Path) -> AbstractContextManager[object]:
        """The epoch's file injected at weight 1 for the block."""
        return applied_loras(self.model, [LoraRef(lora.stem, lora, 1.0)])
