"""Telling a FLUX.1 file or folder apart, with one line for anything else.

A file is FLUX.1 when it holds the BFL transformer (`flux_layout`); an SD1.5/SDXL
checkpoint handed in as FLUX is named as what it is, and so are FLUX.1's image-conditioned
tools (Fill, Depth: wider `img_in`), which lorakit does not train.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.components import read_json
from lorakit.models.family import FAMILY_NAMES, family_from_keys
from lorakit.models.flux.keys import TEXT_TO_IMAGE_CHANNELS, TOOLS, FluxLayout, Shaped, flux_layout

FLUX_PIPELINE = "FluxPipeline"


def detect_flux(path: Path, index: Mapping[str, Shaped]) -> FluxLayout:
    """The FLUX.1 layout of the file at `path` (header entries `index`); else one line."""
    layout = flux_layout(index)
    if layout is None:
        try:
            family = family_from_keys(index, path)
        except LorakitError:
            raise LorakitError(
                f"{path}: not a FLUX.1 checkpoint (no double_blocks.*/single_blocks.* "
                "transformer); give flux1-dev/flux1-schnell or an all-in-one FLUX.1 file"
            ) from None
        raise LorakitError(
            f"{path}: an {FAMILY_NAMES[family]} checkpoint, not FLUX.1; load it as "
            f"{family.value} (or give a FLUX.1 file)"
        )
    if layout.in_channels != TEXT_TO_IMAGE_CHANNELS:
        kind = TOOLS.get(layout.in_channels, "an image-conditioned FLUX.1")
        raise LorakitError(
            f"{path}: {kind} checkpoint ({layout.in_channels}-wide img_in, "
            f"{TEXT_TO_IMAGE_CHANNELS} for text-to-image); use FLUX.1 dev or schnell"
        )
    return layout


def folder_variant(folder: Path) -> str:
    """ "dev" or "schnell" for a diffusers FluxPipeline folder; one line for other folders."""
    index = read_json(folder / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if pipeline != FLUX_PIPELINE:
        raise LorakitError(
            f"{folder}: a {pipeline or 'diffusers'} folder, not FLUX.1 ({FLUX_PIPELINE})"
        )
    transformer = read_json(folder / "transformer" / "config.json")
    if int(transformer.get("in_channels", TEXT_TO_IMAGE_CHANNELS)) != TEXT_TO_IMAGE_CHANNELS:
        raise LorakitError(
            f"{folder}: an image-conditioned FLUX.1 model; use FLUX.1 dev or schnell"
        )
    return "dev" if transformer.get("guidance_embeds") else "schnell"
