"""Which family a checkpoint belongs to, told from its tensor names or its diffusers configs.

Single files are told apart by their text-encoder keys, which differ between SD1.5
(`cond_stage_model.transformer.*`), SDXL base (`conditioner.embedders.0.transformer.*` and
`conditioner.embedders.1.model.*`), SD2.x (`cond_stage_model.model.*`) and the SDXL refiner
(`conditioner.embedders.0.model.*` only), and then by the UNet's input channels: 4 for
text-to-image models, 9 for inpainting (latents, mask, masked image), 8 for
instruct-pix2pix. Only the header is read (names and shapes), so a dry run is cheap on any
file. lorakit trains LoRAs on the text-to-image SD1.5 and SDXL bases; every other kind is
named in a one-line error, with what to use instead, before anything is loaded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from lorakit.errors import LorakitError
from lorakit.models.base import ModelFamily
from lorakit.models.components import read_json, read_scheduler_config
from lorakit.models.flux.keys import flux_layout
from lorakit.models.tensors import read_index

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."
SD2_TE_PREFIX = "cond_stage_model.model."
REFINER_TE_PREFIX = "conditioner.embedders.0.model."
CONV_IN_KEY = UNET_PREFIX + "input_blocks.0.0.weight"
V_PREDICTION_KEY = "v_pred"  # the marker ComfyUI and A1111 read in v-prediction SDXL files

# model_index.json key naming a lorakit family the UNet config alone cannot tell apart.
TINY_MARKER = "_lorakit_family"
SUPPORTED = "lorakit trains LoRAs on text-to-image SD1.5 and SDXL base models"
TEXT_TO_IMAGE_CHANNELS = 4
VARIANTS = {9: "inpainting", 8: "instruct-pix2pix"}
FAMILY_NAMES = {ModelFamily.SD15: "SD1.5", ModelFamily.SDXL: "SDXL"}


class Shaped(Protocol):
    """A tensor or a header entry: anything with a shape."""

    @property
    def shape(self) -> Sequence[int]: ...


def _has(keys: Iterable[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


def _describe(keys: list[str]) -> str:
    """A short account of what a file holds: its most common top-level key prefixes."""
    if not keys:
        return "no tensors"
    heads = Counter(".".join(key.split(".")[:2]) for key in keys).most_common(4)
    listed = ", ".join(f"{head}.* ({count})" for head, count in heads)
    return f"{len(keys)} tensors: {listed}"


def _refuse_other_models(keys: list[str], path: Path) -> None:
    """SD2.x, the SDXL refiner and v-prediction files, told by their keys alone."""
    if _has(keys, SD2_TE_PREFIX):
        raise LorakitError(
            f"{path}: an SD2.x checkpoint (OpenCLIP ViT-H text encoder, {SD2_TE_PREFIX}*); "
            f"{SUPPORTED}: use an SD1.5 or SDXL base model"
        )
    if _has(keys, REFINER_TE_PREFIX) and not _has(keys, SDXL_TE1_PREFIX):
        raise LorakitError(
            f"{path}: an SDXL refiner checkpoint (one OpenCLIP ViT-bigG text encoder, "
            f"{REFINER_TE_PREFIX}* only); {SUPPORTED}: use SDXL base 1.0"
        )
    if V_PREDICTION_KEY in keys:
        raise LorakitError(
            f"{path}: a v-prediction checkpoint (it holds the {V_PREDICTION_KEY!r} marker); "
            f"{SUPPORTED} (epsilon prediction): use the base model it was tuned from"
        )


def refuse_flux(path: Path, what: str) -> None:
    """FLUX.1 where only an SD1.5/SDXL `BaseModel` will do."""
    raise LorakitError(
        f"{path}: {what}; this step loads SD1.5/SDXL models (FLUX.1 goes through `lorakit "
        "train`, `generate`, `grid`, `pick` and the `lora` commands)"
    )


def refuse_variant(family: ModelFamily, channels: int, source: Path) -> None:
    """A UNet that takes more than the 4 latent channels is an inpainting or editing model."""
    if channels == TEXT_TO_IMAGE_CHANNELS:
        return
    kind = VARIANTS.get(channels, "image-conditioned")
    raise LorakitError(
        f"{source}: an {FAMILY_NAMES[family]} {kind} checkpoint ({channels}-channel conv_in, "
        f"{TEXT_TO_IMAGE_CHANNELS} for text-to-image); {SUPPORTED}: use the base model it "
        "was made from"
    )


def family_from_keys(tensors: Mapping[str, Shaped], path: Path) -> ModelFamily:
    """The family of a single-file checkpoint whose tensors (or header entries) are `tensors`,
    read from `path`; a one-line LorakitError for any model lorakit does not train on."""
    keys = list(tensors)
    flux = flux_layout(tensors)
    if flux is not None:
        refuse_flux(path, f"a {flux.name} checkpoint ({flux.transformer}double_blocks.*)")
    _refuse_other_models(keys, path)
    if not (_has(keys, UNET_PREFIX) and _has(keys, VAE_PREFIX)):
        raise LorakitError(
            f"{path}: not an SD1.5/SDXL checkpoint with UNet and VAE ({_describe(keys)}); "
            "give a full base model, not a LoRA, VAE or UNet alone"
        )
    if _has(keys, SDXL_TE1_PREFIX) and _has(keys, SDXL_TE2_PREFIX):
        family = ModelFamily.SDXL
    elif _has(keys, SD15_TE_PREFIX):
        family = ModelFamily.SD15
    else:
        raise LorakitError(
            f"{path}: unknown checkpoint, no SD1.5 or SDXL text encoder ({_describe(keys)}); "
            f"{SUPPORTED}"
        )
    conv_in = tensors.get(CONV_IN_KEY)
    if conv_in is not None and len(conv_in.shape) == 4:
        refuse_variant(family, conv_in.shape[1], path)
    return family


def family_from_folder(folder: Path) -> ModelFamily:
    """The family of a diffusers folder, from model_index.json and the UNet config.

    Sizes cannot decide it (the tiny test models are SD-shaped at any width), so the
    pipeline class and SDXL's text-time conditioning do; SD2's 1024-wide cross-attention
    and UNets with more than 4 input channels (inpainting, pix2pix) are refused.
    """
    index = read_json(folder / "model_index.json")
    pipeline = str(index.get("_class_name", ""))
    if pipeline.startswith("Flux"):
        from lorakit.models.flux.detect import folder_variant  # it imports this module

        folder_variant(folder)  # Fill, Depth and other FLUX tools: one line
        return ModelFamily.FLUX1
    unet = read_json(folder / "unet" / "config.json")
    if index.get(TINY_MARKER) == ModelFamily.TINY.value:
        return ModelFamily.TINY
    if read_scheduler_config(folder).get("prediction_type") == "v_prediction":
        raise LorakitError(f"{folder}: a v-prediction model; {SUPPORTED} (epsilon prediction)")
    if unet.get("addition_embed_type") == "text_time":
        if "text_encoder" not in index or "text_encoder_2" not in index:
            raise LorakitError(
                f"{folder}: an SDXL refiner ({pipeline}); {SUPPORTED}: use SDXL base 1.0"
            )
        family = ModelFamily.SDXL
    else:
        family = _text_to_image_family(folder, index, unet, pipeline)
    refuse_variant(family, int(unet.get("in_channels", TEXT_TO_IMAGE_CHANNELS)), folder)
    return family


def _text_to_image_family(
    folder: Path, index: dict[str, object], unet: dict[str, object], pipeline: str
) -> ModelFamily:
    """A folder without SDXL's text-time conditioning: SD1.5, or a model lorakit refuses."""
    if "StableDiffusionXL" in pipeline:
        raise LorakitError(f"{folder}: {pipeline} without SDXL text-time conditioning; {SUPPORTED}")
    if unet.get("cross_attention_dim") == 1024:
        raise LorakitError(
            f"{folder}: an SD2.x model (1024-wide cross-attention); {SUPPORTED}: use an SD1.5 "
            "or SDXL base model"
        )
    if "text_encoder" not in index:
        raise LorakitError(
            f"{folder}: no text_encoder in model_index.json ({pipeline}); {SUPPORTED}"
        )
    return ModelFamily.SD15


def parse_family(name: str | ModelFamily, source: Path) -> ModelFamily:
    """A family from its name ("sd15"/"sdxl"), with a one-line error for anything else."""
    try:
        return ModelFamily(name)
    except ValueError:
        names = ", ".join(f.value for f in ModelFamily)
        raise LorakitError(f"{source}: unknown model family {name!r}; use one of {names}") from None


def detect_family(path: str | Path) -> ModelFamily:
    """The family of a diffusers folder or a single-file checkpoint; LorakitError if none.

    A FLUX.1 file is FLUX1 (its image-conditioned tools are refused); loaders that take
    SD1.5/SDXL only refuse FLUX1 themselves (`refuse_flux`)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LorakitError(
                f"{path}: a folder without model_index.json; give a diffusers model folder "
                "or a .safetensors checkpoint"
            )
        return family_from_folder(path)
    index = read_index(path)
    if flux_layout(index) is not None:
        from lorakit.models.flux.detect import detect_flux  # it imports this module

        detect_flux(path, index)
        return ModelFamily.FLUX1
    return family_from_keys(index, path)
