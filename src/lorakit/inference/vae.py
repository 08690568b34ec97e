"""VAE encode/decode outside the pipelines, always in the VAE's own (fp32) precision.

The UNet and text encoders run in bf16/fp16 on a GPU, but the VAE must not: SDXL's VAE
overflows in fp16 and gives black images. diffusers' own fix (`force_upcast`) casts the
shared VAE back to the UNet's dtype after use, and under training's autocast the decode
runs in fp16 anyway. So lorakit keeps the VAE in fp32, asks the pipelines for latents,
hands img2img its init image as latents, and does both VAE passes here with autocast off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from PIL import Image

from lorakit.models import BaseModel


@contextmanager
def full_precision(device: torch.device) -> Iterator[None]:
    """No autocast and no autograd: the VAE runs in its parameters' dtype."""
    with torch.autocast(device.type, enabled=False), torch.no_grad():
        yield


def encode_image(
    base: BaseModel, pipe: Any, image: Image.Image, size: tuple[int, int], seed: int
) -> torch.Tensor:
    """`image` resized to `size` (width, height) as scaled latents, sampled with `seed`."""
    vae = base.vae
    pixels = pipe.image_processor.preprocess(image.convert("RGB"), height=size[1], width=size[0])
    pixels = pixels.to(device=vae.device, dtype=vae.dtype)
    with full_precision(vae.device):
        dist = vae.encode(pixels).latent_dist
        latents = dist.sample(torch.Generator("cpu").manual_seed(seed))
    return latents * vae.config.scaling_factor


def decode_latents(base: BaseModel, pipe: Any, latents: torch.Tensor) -> list[Image.Image]:
    """PIL images from a pipeline's `output_type="latent"` result."""
    vae = base.vae
    scaled = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
    with full_precision(vae.device):
        pixels = vae.decode(scaled).sample
    return list(pipe.image_processor.postprocess(pixels.float(), output_type="pil"))
