"""The tiny base model's architecture: SD1.5's layout at 64×64 pixels and 8×8 latents.

Sizes were chosen for pretraining on two CPU cores (see tools/pretrain_tiny.py): a VAE with
SD's 8× reduction, a three-level UNet with cross-attention at 8×8 and 4×4, and a two-layer
CLIP text encoder that reads the real CLIP tokenizer's ids (so trigger words tokenize as
they would for SD1.5).
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

TEXT_WIDTH = 64


def tiny_base_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[16, 32, 64, 64],
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=64,
    )


def tiny_base_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=32,
        norm_num_groups=16,
    )


def tiny_base_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            hidden_size=TEXT_WIDTH,
            intermediate_size=TEXT_WIDTH * 4,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=49408,
            max_position_embeddings=77,
            projection_dim=TEXT_WIDTH,
            pad_token_id=49407,
            bos_token_id=49406,
            eos_token_id=49407,
            hidden_act="quick_gelu",
        )
    )


def tiny_base_scheduler() -> DDPMScheduler:
    """SD1.5's training noise schedule, so LoRA training uses the same objective."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
    )
