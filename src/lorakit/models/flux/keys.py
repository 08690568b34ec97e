"""What a FLUX.1 checkpoint holds, told from its tensor names (the header alone).

FLUX.1 weights come in the layouts Black Forest Labs, ComfyUI and Forge write:

- the BFL transformer file (`flux1-dev.safetensors`): `double_blocks.N.…`,
  `single_blocks.N.…`, `img_in`, `txt_in`, and `guidance_in` in dev only (schnell is
  distilled without the guidance input);
- an all-in-one checkpoint: the same transformer under `model.diffusion_model.`, CLIP-L under
  `text_encoders.clip_l.transformer.`, T5-XXL under `text_encoders.t5xxl.transformer.` and
  the VAE under `vae.` (ComfyUI's save) or `first_stage_model.`;
- separate encoder files: `clip_l.safetensors` (transformers keys, `text_model.…`),
  `t5xxl_fp16.safetensors` (`encoder.block.N.…`, `shared.weight`) and `ae.safetensors`
  (the LDM VAE keys without a prefix).

Only names and shapes are read here, so this module imports nothing heavy: the SD family
check calls it to tell a FLUX file apart before refusing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

TRANSFORMER_PREFIXES = ("model.diffusion_model.", "")
MARKER = "double_blocks.0.img_attn.norm.key_norm.scale"  # the key diffusers tells FLUX by
GUIDANCE_KEY = "guidance_in.in_layer.weight"
IMG_IN_KEY = "img_in.weight"
CLIP_PREFIX = "text_encoders.clip_l.transformer."
T5_PREFIX = "text_encoders.t5xxl.transformer."
VAE_PREFIXES = ("vae.", "first_stage_model.")
T5_MARKER = "encoder.block.0.layer.0.SelfAttention.q.weight"
CLIP_MARKER = "text_model.encoder.layers.0.self_attn.q_proj.weight"
VAE_MARKER = "encoder.conv_in.weight"
TEXT_TO_IMAGE_CHANNELS = 64  # 16 latent channels packed 2×2
# img_in widths of the image-conditioned FLUX.1 tools (diffusers' own table).
TOOLS = {384: "a FLUX.1 Fill (inpainting)", 128: "a FLUX.1 Depth"}


class Shaped(Protocol):
    """A tensor or a header entry: anything with a shape."""

    @property
    def shape(self) -> Sequence[int]: ...


@dataclass(frozen=True)
class FluxLayout:
    """Where each FLUX.1 component lies in one file ("" where the file lacks it)."""

    variant: str  # "dev" (guidance input) or "schnell"
    transformer: str  # key prefix of the BFL transformer
    clip: str | None
    t5: str | None
    vae: str | None
    in_channels: int  # img_in width: 64 for text-to-image

    @property
    def name(self) -> str:
        return f"FLUX.1 {self.variant}"


def _prefix_of(keys: Iterable[str], marker: str, prefixes: Sequence[str]) -> str | None:
    present = set(keys)
    return next((prefix for prefix in prefixes if prefix + marker in present), None)


def flux_layout(tensors: Mapping[str, Shaped]) -> FluxLayout | None:
    """The layout of a file holding a FLUX.1 transformer, or None for any other file."""
    prefix = _prefix_of(tensors, MARKER, TRANSFORMER_PREFIXES)
    if prefix is None:
        return None
    img_in = tensors.get(prefix + IMG_IN_KEY)
    return FluxLayout(
        variant="dev" if prefix + GUIDANCE_KEY in tensors else "schnell",
        transformer=prefix,
        clip=_prefix_of(tensors, CLIP_MARKER, (CLIP_PREFIX,)),
        t5=_prefix_of(tensors, T5_MARKER, (T5_PREFIX,)),
        vae=_prefix_of(tensors, VAE_MARKER, VAE_PREFIXES),
        in_channels=int(img_in.shape[1]) if img_in is not None else TEXT_TO_IMAGE_CHANNELS,
    )


def component_prefix(keys: Iterable[str], component: str) -> str | None:
    """The prefix under which a separate encoder/VAE file keeps `component` ("clip", "t5",
    "vae"), accepting the bare layout and the all-in-one one; None if it is not there."""
    marker, prefixes = {
        "clip": (CLIP_MARKER, (CLIP_PREFIX, "", "cond_stage_model.transformer.")),
        "t5": (T5_MARKER, (T5_PREFIX, "")),
        "vae": (VAE_MARKER, (*VAE_PREFIXES, "")),
    }[component]
    return _prefix_of(keys, marker, prefixes)
