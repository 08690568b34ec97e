"""Telling a FLUX.1 file or folder apart, with one line for anything else.

A file is FLUX.1 when it holds the BFL transformer (`flux_layout`); an SD1.5/SDXL
checkpoint handed in as FLUX is named as what it is, and so are FLUX.1's image-conditioned
tools (Fill, Depth: wider `img_in`), which lorakit does not train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.components import read_json
from lorakit.models.family import FAMILY_NAMES, family_from_keys
from lorakit.models.flux.keys import TEXT_TO_IMAGE_CHANNELS, TOOLS, FluxLayout, Shaped, flux_layout
from lorakit.models.tensors import read_index

FLUX_PIPELINE = "FluxPipeline"
# The files a BFL transformer file lacks: key (as `load_flux_model` takes it) → (FluxLayout
# field, what it holds).
FLUX_FILES = {"clip_l": ("clip", "CLIP-L"), "t5xxl": ("t5", "T5-XXL"), "ae": ("vae", "VAE")}


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


def checked_variant(
    path: Path,
    given: Mapping[str, object],
    named: Callable[[str, object], str],
    fix: Callable[[str], str],
) -> str:
    """The variant of the FLUX.1 model at `path`, once every file its load will need was
    found (headers only, before minutes of loading). `given`: the FLUX_FILES keys' paths
    (None or empty: not given); `named(key, value)` and `fix(key)` word the one-line
    errors the way the caller's options are spelt (`model.t5xxl = …` in a config,
    `--t5xxl …` on the command line)."""
    for key in FLUX_FILES:
        value = given.get(key)
        if value and not Path(str(value)).expanduser().is_file():
            raise LorakitError(f"{named(key, value)}: no such file; check the path")
    path = Path(path).expanduser()
    if path.is_dir():
        return folder_variant(path)
    layout = detect_flux(path, read_index(path))
    for key, (part, what) in FLUX_FILES.items():
        if not getattr(layout, part) and not given.get(key):
            raise LorakitError(
                f"{path}: a {layout.name} transformer file without the {what} weights; "
                f"{fix(key)} (e.g. {key}.safetensors)"
            )
    return layout.variant
