"""FLUX.1's side of `pick`'s signals (`lorakit.inference.signals.SignalModel`).

The same measurements as on SD, in FLUX.1's terms:

- pictures: diffusers' FluxPipeline over the loaded modules (`FluxModel.pipeline`), i.e.
  the flow-matching Euler sampler `lorakit generate` uses, in the signals' few steps, with
  dev's guidance input at generation's 3.5 (`flux_generate.DEFAULT_GUIDANCE`): fidelity
  asks whether the LoRA draws the subject as a user would render it. schnell has no
  guidance input. Latents come back packed and are unpacked to the VAE's layout, the
  layout the training images are encoded in (`encode_latents` applies FLUX's shift and
  scale, as the pipeline's latents have them);
- noising: the rectified-flow line (1 − σ)·x + σ·noise at σ evenly spread in (0, 1), as
  many as SD's timesteps;
- predictions: the transformer's velocity as a training step computes it
  (`flow.predict_velocity`), dev's guidance input at the run's training value
  (`flux.guidance`, 1.0 by default): bleed compares what the LoRA changed in the function
  it was trained on, not in a guidance it never saw in training;
- an epoch's file is applied as `generate` stacks FLUX.1 LoRAs (`applied_flux_loras`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from lorakit.inference.flux_generate import (
    DEFAULT_GUIDANCE,
    applied_flux_loras,
    load_flux_for_inference,
    module_files,
)
from lorakit.inference.prompt import LoraRef
from lorakit.models.flux.flow import add_noise, encode_prompts, predict_velocity, unpack_latents
from lorakit.models.flux.model import FluxModel
from lorakit.training.config import FluxSection, TrainConfig
from lorakit.training.data import TrainItem

# Rows per transformer call: a probe has up to 32 rows, which at 1024² (4096 image tokens
# each) would hold tens of GB of activations beside the model.
BATCH = 8


class FluxSignals:
    """A loaded FLUX.1 base and the guidance the run trained with."""

    def __init__(self, model: FluxModel, guidance: float) -> None:
        self.model = model
        self.device = model.transformer.device
        self.guidance = guidance

    @classmethod
    def load(cls, config: TrainConfig, summary: dict[str, Any], device: str | None) -> FluxSignals:
        """The run's base with its separate encoder / VAE files, as training loaded it."""
        m = config.model
        model = load_flux_for_inference(
            Path(summary.get("base_model") or m.path),
            device,
            config=Path(m.config) if m.config else None,
            **module_files(m),
        )
        return cls(model, (config.flux or FluxSection()).guidance)

    @torch.no_grad()
    def pictures(
        self, prompts: list[str], size: tuple[int, int], steps: int, seed: int
    ) -> torch.Tensor:
        """Latents (unpacked, B × 16 × H/8 × W/8) the model with whatever LoRA is applied
        draws for `prompts`, one fixed seed per prompt."""
        model = self.model
        pipe = model.pipeline()
        pipe.set_progress_bar_config(disable=True)
        generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(len(prompts))]
        packed = pipe(
            prompts,
            width=size[0],
            height=size[1],
            num_inference_steps=steps,
            guidance_scale=DEFAULT_GUIDANCE,
            generator=generators,
            max_sequence_length=model.max_sequence_length,
            output_type="latent",
        ).images
        scale = pipe.vae_scale_factor
        return unpack_latents(packed.float(), size[1] // scale, size[0] // scale)

    def levels(self, count: int) -> torch.Tensor:
        """`count` σ evenly spread in (0, 1)."""
        return torch.linspace(0, 1, count + 2)[1:-1]

    def add_noise(
        self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The rectified-flow line (1 − σ)·x + σ·noise."""
        return add_noise(latents, noise, t)

    def predict(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        items: Sequence[TrainItem],
        prompts: Sequence[str],
    ) -> torch.Tensor:
        """The velocity at σ = `t` for each row's prompt (each distinct prompt encoded once),
        `BATCH` rows per call; `items` (SDXL's size conditioning) mean nothing to FLUX."""
        distinct = list(dict.fromkeys(prompts))
        sequence, pooled = encode_prompts(self.model, distinct, self.device)
        index = torch.tensor([distinct.index(p) for p in prompts], device=sequence.device)
        out = []
        for start in range(0, noisy.shape[0], BATCH):
            rows = index[start : start + BATCH]
            out.append(
                predict_velocity(
                    self.model.transformer,
                    noisy[start : start + BATCH],
                    t[start : start + BATCH],
                    sequence[rows],
                    pooled[rows],
                    self.guidance,
                )
            )
        return torch.cat(out)

    def applied(self, lora: Path) -> AbstractContextManager[object]:
        """The epoch's file at weight 1 for the block."""
        return applied_flux_loras(self.model, [LoraRef(lora.stem, lora, 1.0)])
