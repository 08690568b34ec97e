"""FLUX.1's training math: rectified-flow noising, timestep sampling, packed latents, text
conditioning, and one loss step over the transformer.

FLUX.1 is a rectified-flow model: a noisy latent is the straight line
`x_σ = (1 − σ)·x + σ·noise` and the transformer predicts its velocity `noise − x`
(sd-scripts' `--model_prediction_type raw`, the setting its FLUX README trains with;
its argparse default is `sigma_scaled`). The transformer sees
latents as a sequence of 2×2 patches (64 values per token) with 3-axis position ids,
exactly as diffusers' FluxPipeline feeds it, and takes the timestep as σ in [0, 1]: it
multiplies timestep and guidance by 1000 inside (diffusers' FluxPipeline passes
`timestep / 1000` of its 0–1000 schedule, sd-scripts passes `timesteps / 1000`).

VAE scale and shift live in `lorakit.training.caching.encode_latents`, which already
applies `(z − shift_factor) · scaling_factor` from the VAE config (FLUX.1's VAE has a
shift, SD's none), so cached latents arrive here ready to noise.

Everything on the step path is tensor math on the latents' device with no host reads,
as in `lorakit.training.objective`, so the step stays capturable in a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.flux.model import FluxModel

# sd-scripts' `--timestep_sampling` choices that draw σ directly (its default "sigma" goes
# through a discrete scheduler table and is not offered).
TIMESTEP_SAMPLINGS = ("shift", "sigmoid", "uniform")
DEFAULT_SAMPLING = "shift"
# sd-scripts' `--discrete_flow_shift` default. Its README's FLUX example uses 3.1582
# (= e^1.15, the shift FLUX.1's own dynamic schedule reaches at 4096 tokens, i.e. 1024²).
DEFAULT_FLOW_SHIFT = 3.0
# sd-scripts' `--guidance_scale` argparse default is 3.5, but its FLUX README trains with
# 1.0 (as do the configs published with it): the LoRA then learns the distilled model's
# unguided behaviour, and inference at the usual 3.5 still works.
DEFAULT_GUIDANCE = 1.0


@dataclass(frozen=True)
class FlowConfig:
    """How σ is drawn and which guidance dev is conditioned on while training.

    `sampling` defaults to "shift" (sd-scripts' README setting for FLUX.1 LoRAs): σ =
    sigmoid(sigmoid_scale · N(0, 1)), then shifted by `flow_shift` towards high noise
    (σ' = s·σ / (1 + (s − 1)·σ)), which is where dev's inference schedule spends its steps
    at 1024². "sigmoid" is the same without the shift (x-flux's choice), "uniform" is
    σ ~ U(0, 1).
    """

    sampling: str = DEFAULT_SAMPLING
    sigmoid_scale: float = 1.0
    flow_shift: float = DEFAULT_FLOW_SHIFT
    guidance: float = DEFAULT_GUIDANCE

    def __post_init__(self) -> None:
        if self.sampling not in TIMESTEP_SAMPLINGS:
            raise LorakitError(
                f"timestep sampling {self.sampling!r} unknown; use one of "
                f"{', '.join(TIMESTEP_SAMPLINGS)}"
            )
        if self.sigmoid_scale <= 0 or self.flow_shift <= 0:
            raise LorakitError("sigmoid_scale and flow_shift must be > 0")


def sample_sigmas(
    batch: int,
    config: FlowConfig,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """σ for each sample, in (0, 1), shape (batch,), float32 on `device`."""
    if config.sampling == "uniform":
        return torch.rand(batch, generator=generator, device=device)
    normal = torch.randn(batch, generator=generator, device=device)
    sigmas = torch.sigmoid(config.sigmoid_scale * normal)
    if config.sampling == "shift":
        shift = config.flow_shift
        sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
    return sigmas


def add_noise(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The point σ of the way from the latents to the noise: (1 − σ)·x + σ·noise."""
    sigma = sigmas.view(-1, *[1] * (latents.dim() - 1)).to(latents.dtype)
    return (1.0 - sigma) * latents + sigma * noise


def velocity(latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The rectified-flow target, d x_σ / dσ = noise − x."""
    return noise - latents


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H/2 · W/2, 4C): each 2×2 patch one token, channel-major within
    the token, row-major over patches (diffusers' `FluxPipeline._pack_latents`)."""
    batch, channels, height, width = latents.shape
    if height % 2 or width % 2:
        raise LorakitError(f"latent size {height}×{width} is odd; FLUX.1 packs 2×2 patches")
    patches = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    patches = patches.permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_latents` for a latent of `height` × `width`."""
    batch, _, features = packed.shape
    patches = packed.view(batch, height // 2, width // 2, features // 4, 2, 2)
    patches = patches.permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, features // 4, height, width)


def image_ids(
    height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Position ids of the packed tokens of a `height` × `width` latent: (N, 3) with axis 0
    zero, axis 1 the patch row, axis 2 the patch column (RoPE over rows and columns)."""
    rows, cols = height // 2, width // 2
    ids = torch.zeros(rows, cols, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :]
    return ids.reshape(rows * cols, 3)


def text_ids(
    length: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Position ids of the T5 tokens: all zero, as FLUX.1 was trained (position comes from T5)."""
    return torch.zeros(length, 3, device=device, dtype=dtype)


def encode_prompts(
    model: FluxModel,
    captions: Sequence[str],
    device: torch.device | str | None = None,
    max_sequence_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 sequence [B, L, D], CLIP-L pooled [B, P]) as diffusers' FluxPipeline encodes a
    prompt: both padded to their full length (CLIP 77, T5 512 for dev / 256 for schnell),
    no attention mask. The tensors depend on the caption alone, so they can be cached;
    gradients flow into CLIP-L when the caller trains it (wrap in no_grad otherwise)."""
    clip, t5 = model.text_encoders
    clip_tokenizer, t5_tokenizer = model.tokenizers
    length = max_sequence_length or model.max_sequence_length
    device = device if device is not None else next(t5.parameters()).device
    clip_ids = clip_tokenizer(
        list(captions),
        padding="max_length",
        max_length=clip_tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    t5_ids = t5_tokenizer(
        list(captions),
        padding="max_length",
        max_length=length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    pooled = clip(clip_ids.to(device), output_hidden_states=False).pooler_output
    sequence = t5(t5_ids.to(device), output_hidden_states=False)[0]
    return sequence, pooled


def predict_velocity(
    transformer: nn.Module,
    noisy: torch.Tensor,
    sigmas: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    guidance: float = DEFAULT_GUIDANCE,
) -> torch.Tensor:
    """The transformer's velocity for unpacked noisy latents (B, C, H, W), same shape back.

    Inputs go in the transformer's dtype; guidance is given only to a model that embeds it
    (dev), one value per sample, as FluxPipeline does."""
    batch, _, height, width = noisy.shape
    dtype = next(transformer.parameters()).dtype
    device = noisy.device
    guidance_input = None
    if transformer.config.guidance_embeds:
        guidance_input = torch.full((batch,), guidance, device=device, dtype=torch.float32)
    out = transformer(
        hidden_states=pack_latents(noisy).to(dtype),
        encoder_hidden_states=prompt_embeds.to(device, dtype),
        pooled_projections=pooled.to(device, dtype),
        timestep=sigmas.to(device, dtype),
        img_ids=image_ids(height, width, device, dtype),
        txt_ids=text_ids(prompt_embeds.shape[1], device, dtype),
        guidance=guidance_input,
        return_dict=False,
    )[0]
    return unpack_latents(out, height, width)


def flux_loss(
    transformer: nn.Module,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled: torch.Tensor,
    config: FlowConfig | None = None,
    generator: torch.Generator | None = None,
    sample_weights: torch.Tensor | None = None,
    sigmas: torch.Tensor | None = None,
) -> torch.Tensor:
    """One step's loss: draw noise and σ (or take the given σ, e.g. fixed ones for a
    validation loss), noise the latents, predict, and return the mean over the batch of
    per-sample MSE to the velocity (× `sample_weights`, e.g. prior-loss weights)."""
    config = config or FlowConfig()
    latents = latents.float()
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    if sigmas is None:
        sigmas = sample_sigmas(latents.shape[0], config, latents.device, generator)
    noisy = add_noise(latents, noise, sigmas)
    pred = predict_velocity(transformer, noisy, sigmas, prompt_embeds, pooled, config.guidance)
    per_sample = (pred.float() - velocity(latents, noise)).pow(2).mean(dim=(1, 2, 3))
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.device)
    return per_sample.mean()
