"""The loaded FLUX.1 model, its bundled configs and tokenizers, and the empty architecture.

FLUX.1 has a transformer instead of a UNet and two text encoders of different kinds
(CLIP-L for the pooled vector, T5-XXL for the token sequence), so it is its own dataclass
beside `BaseModel`; stages reach it through the same few attributes (`text_encoders`,
`tokenizers`, `vae`, `scheduler_config`, `pipeline()`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from lorakit.models.components import TOKENIZER_DIR, read_scheduler_config
from lorakit.models.configs import CONFIG_ROOT

# T5 v1.1's SentencePiece vocabulary as a `tokenizers` file (tokenizer.json), taken from the
# diffsynth 1.1.9 wheel on PyPI (Apache-2.0; spiece.model sha256 d60acb12…ea86, the one
# google/t5-v1_1-xxl and FLUX.1 ship), so no hub and no sentencepiece package are needed.
T5_TOKENIZER_DIR = CONFIG_ROOT / "t5_tokenizer"
VARIANTS = ("dev", "schnell")
# The T5 sequence length each variant was trained with (diffusers' and sd-scripts' defaults).
MAX_SEQUENCE_LENGTH = {"dev": 512, "schnell": 256}


def bundled_flux_dir(variant: str) -> Path:
    """The bundled diffusers-layout config folder of FLUX.1 `variant` ("dev"/"schnell")."""
    return CONFIG_ROOT / f"flux1-{variant}"


def load_flux_tokenizers() -> list[CLIPTokenizer | T5TokenizerFast]:
    """CLIP-L's and T5's tokenizers from the bundled vocabularies (never from a hub)."""
    return [
        CLIPTokenizer.from_pretrained(TOKENIZER_DIR),
        T5TokenizerFast.from_pretrained(T5_TOKENIZER_DIR),
    ]


@dataclass
class FluxModel:
    """Components of one FLUX.1 checkpoint: text_encoders = [CLIP-L, T5-XXL encoder]."""

    variant: str
    transformer: FluxTransformer2DModel
    vae: AutoencoderKL
    text_encoders: list[torch.nn.Module]
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    source: Path

    @property
    def max_sequence_length(self) -> int:
        return MAX_SEQUENCE_LENGTH[self.variant]

    @property
    def latent_stride(self) -> int:
        """What image sides must be multiples of: the VAE's reduction × the transformer's
        2×2 latent patches (16 px for FLUX.1)."""
        return 2 ** len(self.vae.config.block_out_channels)

    def pipeline(self, scheduler: SchedulerMixin | None = None) -> FluxPipeline:
        """A diffusers FluxPipeline over these very modules (no copy)."""
        if scheduler is None:
            scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        return FluxPipeline(
            scheduler=scheduler,
            vae=self.vae,
            text_encoder=self.text_encoders[0],
            tokenizer=self.tokenizers[0],
            text_encoder_2=self.text_encoders[1],
            tokenizer_2=self.tokenizers[1],
            transformer=self.transformer,
        )


def assemble_flux_model(
    source: Path,
    variant: str,
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: list[torch.nn.Module],
    scheduler_config: dict[str, Any],
) -> FluxModel:
    """Freeze the modules (LoRA trains beside them) and join them with the tokenizers."""
    for module in (transformer, vae, *text_encoders):
        module.eval().requires_grad_(False)
    return FluxModel(
        variant=variant,
        transformer=transformer,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=load_flux_tokenizers(),
        scheduler_config=scheduler_config,
        source=source,
    )


def empty_flux_model(variant: str = "dev") -> FluxModel:
    """The full-size FLUX.1 architecture on the meta device, from the bundled configs: the
    real module tree (parameter counts, LoRA module names) with no memory for weights."""
    folder = bundled_flux_dir(variant)
    with init_empty_weights():
        transformer = FluxTransformer2DModel.from_config(
            FluxTransformer2DModel.load_config(folder / "transformer")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        clip = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
        t5 = T5EncoderModel(T5Config.from_pretrained(folder / "text_encoder_2"))
    return assemble_flux_model(
        folder, variant, transformer, vae, [clip, t5], read_scheduler_config(folder)
    )
