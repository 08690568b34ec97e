"""The loaded base model: what training, the LoRA network and inference share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderKL,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from lorakit.families import ModelFamily


@dataclass
class BaseModel:
    """Components of one Stable Diffusion checkpoint, loaded once and shared by reference.

    Text encoders and tokenizers are lists so SD1.5 (one) and SDXL (two) go through the
    same code; `scheduler_config` is the noise schedule the checkpoint was trained with.
    """

    family: ModelFamily
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoders: list[CLIPTextModel | CLIPTextModelWithProjection]
    tokenizers: list[CLIPTokenizer]
    scheduler_config: dict[str, Any]
    source: Path

    @property
    def is_sdxl(self) -> bool:
        return self.family is ModelFamily.SDXL

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def pipeline(
        self, scheduler: SchedulerMixin | None = None
    ) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
        """A diffusers pipeline over these very modules (no copy), safety checker off."""
        if scheduler is None:
            from diffusers import EulerDiscreteScheduler

            scheduler = EulerDiscreteScheduler.from_config(self.scheduler_config)
        if self.is_sdxl:
            return StableDiffusionXLPipeline(
                vae=self.vae,
                text_encoder=self.text_encoders[0],
                text_encoder_2=self.text_encoders[1],
                tokenizer=self.tokenizers[0],
                tokenizer_2=self.tokenizers[1],
                unet=self.unet,
                scheduler=scheduler,
            )
        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            unet=self.unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
