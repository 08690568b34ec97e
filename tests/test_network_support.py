"""Shared helpers for the network and models tests: tiny bases, fixed forward passes."""

from __future__ import annotations

from pathlib import Path

import torch

from lorakit.models import BaseModel, ModelFamily
from lorakit.network.lora import LoRANetwork
from tests.helpers.tiny import tiny_sd15_pipeline, tiny_sdxl_pipeline


def tiny_base(family: str, seed: int = 0) -> BaseModel:
    """A tiny random base of `family`; the same seed gives the same weights."""
    if family == "sd15":
        pipe = tiny_sd15_pipeline(seed)
        encoders, tokenizers = [pipe.text_encoder], [pipe.tokenizer]
    else:
        pipe = tiny_sdxl_pipeline(seed)
        encoders = [pipe.text_encoder, pipe.text_encoder_2]
        tokenizers = [pipe.tokenizer, pipe.tokenizer_2]
    return BaseModel(
        ModelFamily(family),
        pipe.unet,
        pipe.vae,
        encoders,
        tokenizers,
        dict(pipe.scheduler.config),
        Path("."),
    )


def forward(base: BaseModel) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """UNet output and every text encoder's penultimate hidden state on fixed inputs."""
    generator = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    ids = torch.randint(0, 49408, (2, 77), generator=generator)
    timesteps = torch.tensor([10, 500])
    with torch.no_grad():
        outputs = [encoder(ids, output_hidden_states=True) for encoder in base.text_encoders]
        hidden = [output.hidden_states[-2] for output in outputs]
        if base.family is ModelFamily.SDXL:
            added = {"text_embeds": outputs[1].text_embeds, "time_ids": torch.ones(2, 6) * 64}
            unet = base.unet(latents, timesteps, torch.cat(hidden, -1), added_cond_kwargs=added)
        else:
            unet = base.unet(latents, timesteps, hidden[0])
    return unet.sample, hidden


def randomise(network: LoRANetwork, seed: int = 3) -> None:
    """Non-zero up weights (as after training), so every module changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.loras:
            weight = module.lora_up.weight
            weight.copy_(torch.randn(weight.shape, generator=generator) * 0.05)


def max_diff(a: torch.Tensor | list[torch.Tensor], b: torch.Tensor | list[torch.Tensor]) -> float:
    if isinstance(a, list):
        return max(max_diff(x, y) for x, y in zip(a, b, strict=True))
    return float((a - b).abs().max())
