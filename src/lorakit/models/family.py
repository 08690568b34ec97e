"""Which family a checkpoint belongs to, told from its tensor names or its diffusers configs.

Single files are told apart by their text-encoder keys, which differ between SD1.5
(`cond_stage_model.transformer.*`), SDXL base (`conditioner.embedders.0.transformer.*` and
`conditioner.embedders.1.model.*`), SD2.x (`cond_stage_model.model.*`) and the SDXL refiner
(`conditioner.embedders.0.model.*` only). SD2.x, the refiner and v-prediction models are
out of scope: they are named in the error so the user knows why, instead of failing later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.models.base import ModelFamily
from lorakit.models.checkpoint import read_keys
from lorakit.models.components import read_json, read_scheduler_config

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."
SD2_TE_PREFIX = "cond_stage_model.model."
REFINER_TE_PREFIX = "conditioner.embedders.0.model."
V_PREDICTION_KEY = "v_pred"  # the marker ComfyUI and A1111 read in v-prediction SDXL files

# model_index.json key naming a lorakit family the UNet config alone cannot tell apart.
TINY_MARKER = "_lorakit_family"
SUPPORTED = "lorakit supports SD1.5 and SDXL base (epsilon-prediction) models"


def _has(keys: Iterable[str], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in keys)


def _describe(keys: list[str]) -> str:
    """A short account of what a file holds: its most common top-level key prefixes."""
    if not keys:
        return "no tensors"
    heads = Counter(".".join(key.split(".")[:2]) for key in keys).most_common(4)
    listed = ", ".join(f"{head}.* ({count})" for head, count in heads)
    return f"{len(keys)} tensors: {listed}"


def family_from_keys(keys: list[str], path: Path) -> ModelFamily:
    """The family of a single-file checkpoint with tensor names `keys` (read from `path`)."""
    if _has(keys, SD2_TE_PREFIX):
        raise LorakitError(f"{path}: an SD2.x checkpoint (OpenCLIP ViT-H); {SUPPORTED}")
    if _has(keys, REFINER_TE_PREFIX) and not _has(keys, SDXL_TE1_PREFIX):
        raise LorakitError(f"{path}: an SDXL refiner checkpoint; {SUPPORTED}")
    if V_PREDICTION_KEY in keys:
        raise LorakitError(f"{path}: a v-prediction checkpoint; {SUPPORTED}")
    if not (_has(keys, UNET_PREFIX) and _has(keys, VAE_PREFIX)):
        raise LorakitError(
            f"{path}: not an SD1.5/SDXL checkpoint with UNet and VAE ({_describe(keys)}); "
            "give a full base model, not a LoRA, VAE or UNet alone"
        )
    if _has(keys, SDXL_TE1_PREFIX) and _has(keys, SDXL_TE2_PREFIX):
        return ModelFamily.SDXL
    if _has(keys, SD15_TE_PREFIX):
        return ModelFamily.SD15
    raise LorakitError(
        f"{path}: unknown checkpoint, no SD1.5 or SDXL text encoder ({_describe(keys)}); "
        f"{SUPPORTED}"
    )


def family_from_folder(folder: Path) -> ModelFamily:
    """The family of a diffusers folder, from model_index.json and the UNet config.

    Sizes cannot decide it (the tiny test models are SD-shaped at any width), so the
    pipeline class and SDXL's text-time conditioning do, and SD2's 1024-wide
    cross-attention is refused.
    """
    index = read_json(folder / "model_index.json")
    unet = read_json(folder / "unet" / "config.json")
    pipeline = str(index.get("_class_name", ""))
    if index.get(TINY_MARKER) == ModelFamily.TINY.value:
        return ModelFamily.TINY
    if read_scheduler_config(folder).get("prediction_type") == "v_prediction":
        raise LorakitError(f"{folder}: a v-prediction model; {SUPPORTED}")
    if unet.get("addition_embed_type") == "text_time":
        if "text_encoder" not in index or "text_encoder_2" not in index:
            raise LorakitError(f"{folder}: an SDXL refiner ({pipeline}); {SUPPORTED}")
        return ModelFamily.SDXL
    if "StableDiffusionXL" in pipeline:
        raise LorakitError(f"{folder}: {pipeline} without SDXL text-time conditioning; {SUPPORTED}")
    if unet.get("cross_attention_dim") == 1024:
        raise LorakitError(f"{folder}: an SD2.x model (1024-wide cross-attention); {SUPPORTED}")
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
    """The family of a diffusers folder or a single-file checkpoint; LorakitError if none."""
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise LorakitError(
                f"{path}: a folder without model_index.json; give a diffusers model folder "
                "or a .safetensors checkpoint"
            )
        return family_from_folder(path)
    return family_from_keys(read_keys(path), path)
