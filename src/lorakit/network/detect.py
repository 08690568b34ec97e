"""Which base family a LoRA file was made for, from its metadata, keys and shapes.

Metadata is trusted first (sd-scripts and lorakit write it); otherwise the keys decide:
SDXL has two text encoders (`lora_te1_`/`lora_te2_`, `text_encoder_2.`), SD1.5 one; the
cross-attention input width is 768 for SD1.5, 2048 for SDXL and 64 for the tiny model; and
only SD1.5 has attention in its first down block.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from lorakit.errors import LorakitError
from lorakit.models.base import ModelFamily
from lorakit.network.flux import is_flux_lora
from lorakit.network.metadata import family_from_metadata

_CROSS_WIDTH = {768: ModelFamily.SD15, 2048: ModelFamily.SDXL, 64: ModelFamily.TINY}
_CROSS_KEY = re.compile(r"attn2[._]to_k[._](lora_down|lora_A|lora[._]down)")
_SD15_FIRST_ATTENTION = (
    "down_blocks_0_attentions",
    "down_blocks.0.attentions",
    "input_blocks_1_1_",
    "input_blocks.1.1.",
)


def is_kohya_format(state: Mapping[str, torch.Tensor]) -> bool:
    return any(key.startswith(("lora_unet_", "lora_te")) for key in state)


def detect_lora_family(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str = "LoRA"
) -> ModelFamily:
    """The family of a kohya- or diffusers-format LoRA; LorakitError when nothing tells."""
    if is_flux_lora(state, metadata):  # its CLIP-L keys (`lora_te1_`) would read as SDXL
        raise LorakitError(f"{source}: a FLUX.1 LoRA; this command takes SD1.5 and SDXL LoRAs")
    family = family_from_metadata(metadata)
    if family is not None:
        return family
    keys = list(state)
    if any(key.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for key in keys):
        return ModelFamily.SDXL
    for key in keys:
        if _CROSS_KEY.search(key) and int(state[key].shape[1]) in _CROSS_WIDTH:
            return _CROSS_WIDTH[int(state[key].shape[1])]
    if any(marker in key for key in keys for marker in _SD15_FIRST_ATTENTION):
        return ModelFamily.SD15
    if any(key.startswith("lora_te_") for key in keys):
        return ModelFamily.SD15
    if any(("input_blocks" in key or "down_blocks" in key) for key in keys):
        return ModelFamily.SDXL
    raise LorakitError(f"{source}: cannot tell the base model family; pass --base or --family")
