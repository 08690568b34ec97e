"""A tiny FLUX.1 in the real layouts: a diffusers folder, and the same weights as a BFL
transformer file with separate clip_l / t5xxl / ae files, or one all-in-one checkpoint.

The structure is FLUX.1's (double and single blocks, guidance input for dev, CLIP-L
pooled vector, T5 token sequence, a 16-channel VAE with 8× reduction, packed latents)
at a width that renders in a fraction of a second on a CPU. The BFL keys come from
`lorakit.models.flux.convert` (checked against diffusers' own converter in the tests).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextModel, T5Config, T5EncoderModel

from lorakit.models.flux.convert import diffusers_to_bfl, transformer_rules
from lorakit.models.flux.keys import CLIP_PREFIX, T5_PREFIX
from lorakit.models.flux.model import (
    FluxModel,
    assemble_flux_model,
    bundled_flux_dir,
    load_flux_tokenizers,
)
from tests.helpers.ldm import _clip_state, _vae_state, write_random
from tests.helpers.tiny import _text_config, tiny_vae

TRANSFORMER_PREFIX = "model.diffusion_model."
VAE_PREFIX = "vae."


def tiny_flux_pipeline(
    variant: str = "dev", seed: int = 0, num_layers: int = 2, num_single_layers: int = 2
) -> FluxPipeline:
    """The tiny FLUX.1; more blocks (`num_layers` double, `num_single_layers` single) for
    block swap, which keeps two of each on the device."""
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=variant == "dev",
        axes_dims_rope=(2, 2, 4),
    )
    vae = tiny_vae(
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=32128,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            feed_forward_proj="gated-gelu",
            relative_attention_num_buckets=8,
        )
    )
    clip_tokenizer, t5_tokenizer = load_flux_tokenizers()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(
        bundled_flux_dir(variant), subfolder="scheduler"
    )
    return FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=CLIPTextModel(_text_config(32, 32)),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )


def tiny_flux_model(variant: str = "dev", seed: int = 0) -> FluxModel:
    """The tiny FLUX.1 as lorakit holds a loaded model (frozen, eval mode)."""
    pipe = tiny_flux_pipeline(variant, seed)
    return assemble_flux_model(
        Path(f"tiny-flux1-{variant}"),
        variant,
        pipe.transformer,
        pipe.vae,
        [pipe.text_encoder, pipe.text_encoder_2],
        dict(pipe.scheduler.config),
    )


def bfl_transformer_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The transformer's tensors under the BFL keys (`flux1-dev.safetensors`)."""
    rules = transformer_rules(dict(transformer.config))
    return {k: v.contiguous() for k, v in diffusers_to_bfl(transformer.state_dict(), rules).items()}


def t5_file_state(t5: torch.nn.Module) -> dict[str, torch.Tensor]:
    """As `t5xxl_fp16.safetensors` keeps it: the embedding once, as `shared.weight`."""
    state = dict(t5.state_dict())
    state.pop("encoder.embed_tokens.weight")
    return {k: v.contiguous() for k, v in state.items()}


def write_flux_files(pipe: FluxPipeline, folder: Path) -> dict[str, Path]:
    """The BFL transformer and separate clip_l / t5xxl / ae files, as users download them."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "transformer": bfl_transformer_state(pipe.transformer),
        "clip_l": _clip_state(pipe.text_encoder),
        "t5xxl": t5_file_state(pipe.text_encoder_2),
        "ae": _vae_state(pipe.vae),
    }
    paths = {}
    for name, state in parts.items():
        paths[name] = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, paths[name])
    return paths


def write_all_in_one(pipe: FluxPipeline, out: Path, fp8_prefixes: tuple[str, ...] = ()) -> Path:
    """One checkpoint as ComfyUI saves FLUX.1: transformer, both encoders and the VAE;
    the parts under `fp8_prefixes` stored as float8 e4m3fn (the "fp8" downloads)."""
    state: dict[str, torch.Tensor] = {}
    for prefix, part in (
        (TRANSFORMER_PREFIX, bfl_transformer_state(pipe.transformer)),
        (CLIP_PREFIX, _clip_state(pipe.text_encoder)),
        (T5_PREFIX, t5_file_state(pipe.text_encoder_2)),
        (VAE_PREFIX, _vae_state(pipe.vae)),
    ):
        if prefix in fp8_prefixes:
            part = {key: value.to(torch.float8_e4m3fn) for key, value in part.items()}
        state.update({prefix + key: value.contiguous() for key, value in part.items()})
    save_file(state, out)
    return out


def write_random_bfl(
    out: Path, config: dict[str, object], dtype: torch.dtype = torch.float16, seed: int = 0
) -> Path:
    """A BFL transformer file of `config` with random weights (normal, std 0.02), written
    tensor by tensor so the model never sits in memory whole (keys and shapes from the
    model on the meta device)."""
    with init_empty_weights():
        layout = bfl_transformer_state(FluxTransformer2DModel.from_config(config))
    return write_random(out, layout, dtype, seed)


def load_written_files(files: dict[str, Path]) -> FluxModel:
    """The model `write_flux_files` wrote (BFL transformer + encoder files), in fp32, with
    the tiny architecture of `files["folder"]`."""
    from lorakit.models.flux.loader import load_flux_model

    return load_flux_model(
        files["transformer"],
        dtype=torch.float32,
        clip_l=files["clip_l"],
        t5xxl=files["t5xxl"],
        ae=files["ae"],
        config=files["folder"],
    )
