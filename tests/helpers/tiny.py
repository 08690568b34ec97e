"""Tiny Stable Diffusion models in the real SD1.5 and SDXL layouts, with random weights.

They keep every structural feature that naming and loading depend on (block types,
layers per block, linear vs. 1×1-conv projections, SDXL's two text encoders and its
text-time embedding) while being small enough to train at tens of steps per second on
a CPU. The tokenizer is lorakit's bundled CLIP tokenizer, so prompts tokenize exactly as
with the real models.

Only tests use these (random weights, any seed); the pretrained model that `make demo`
uses is another one: `lorakit.synthetic.architecture`, shipped in `models/tiny_base/`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lorakit.families import ModelFamily
from lorakit.models.components import bundled_config_dir, load_tokenizers


def _text_config(hidden: int, projection: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
        projection_dim=projection,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        hidden_act="quick_gelu",
    )


def tiny_vae(latent_channels: int = 4, scaling_factor: float = 0.18215, **extra) -> AutoencoderKL:
    """SD's 4-channel VAE by default; FLUX's 16-channel one takes its scale, shift and no
    quant convs through the arguments."""
    # Four blocks keep the real 8× spatial reduction, so latent sizes match real models.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 16, 16, 16],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=64,
        scaling_factor=scaling_factor,
        **extra,
    )


def tiny_sd15_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_text_config(32, 32))
    (tokenizer,) = load_tokenizers(ModelFamily.SD15)
    scheduler = PNDMScheduler.from_pretrained(
        bundled_config_dir(ModelFamily.SD15), subfolder="scheduler"
    )
    return StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    torch.manual_seed(seed)
    te1, te2 = 32, 32
    time_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=te1 + te2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=6 * time_dim + te2,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(_text_config(te1, te1))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(te2, te2))
    tokenizer, tokenizer_2 = load_tokenizers(ModelFamily.SDXL)
    scheduler = EulerDiscreteScheduler.from_pretrained(
        bundled_config_dir(ModelFamily.SDXL), subfolder="scheduler"
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def save_tiny(family: str, folder: Path, seed: int = 0) -> Path:
    """Write a tiny diffusers folder of `family` ("sd15" or "sdxl") and return its path."""
    pipe = tiny_sd15_pipeline(seed) if family == "sd15" else tiny_sdxl_pipeline(seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
