"""Per-family component tables, the bundled tokenizers, and empty (meta-device) models.

Everything here reads only the files bundled in `lorakit/models/configs`, so it works with
no network and no weights: the tokenizers are real, the modules are built on the meta
device when only their structure is needed (counting parameters or LoRA module names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from lorakit.errors import LorakitError
from lorakit.models.base import BaseModel, ModelFamily
from lorakit.models.configs import CONFIG_ROOT

TOKENIZER_DIR = CONFIG_ROOT / "clip_tokenizer"
# The pretrained tiny model ships whole (configs and weights) inside the package.
TINY_BASE_DIR = Path(__file__).parent / "tiny_base"

TextEncoderClass = type[CLIPTextModel] | type[CLIPTextModelWithProjection]

# (subfolder, class) of each text encoder, in the order BaseModel.text_encoders holds them.
TEXT_ENCODERS: dict[ModelFamily, tuple[tuple[str, TextEncoderClass], ...]] = {
    ModelFamily.SD15: (("text_encoder", CLIPTextModel),),
    ModelFamily.TINY: (("text_encoder", CLIPTextModel),),
    ModelFamily.SDXL: (
        ("text_encoder", CLIPTextModel),
        ("text_encoder_2", CLIPTextModelWithProjection),
    ),
}

# SDXL's second tokenizer pads with "!" (token 0), as the OpenCLIP tokenizer it stands for.
TOKENIZER_PAD_TOKENS: dict[ModelFamily, tuple[str | None, ...]] = {
    ModelFamily.SD15: (None,),
    ModelFamily.TINY: (None,),
    ModelFamily.SDXL: (None, "!"),
}


def bundled_config_dir(family: ModelFamily) -> Path:
    """The bundled diffusers-layout config folder of `family` (weights only for tiny)."""
    return TINY_BASE_DIR if family is ModelFamily.TINY else CONFIG_ROOT / family.value


def load_tokenizers(family: ModelFamily) -> list[CLIPTokenizer]:
    """The family's tokenizers from the bundled CLIP vocabulary (never from a checkpoint)."""
    tokenizers = []
    for pad_token in TOKENIZER_PAD_TOKENS[family]:
        extra = {"pad_token": pad_token} if pad_token else {}
        tokenizers.append(CLIPTokenizer.from_pretrained(TOKENIZER_DIR, **extra))
    return tokenizers


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a one-line LorakitError if it is missing or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LorakitError(f"{path}: missing; the model folder is incomplete") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LorakitError(f"{path}: not valid JSON ({exc}); restore the file") from None
    if not isinstance(data, dict):
        raise LorakitError(f"{path}: expected a JSON object; restore the file")
    return data


def read_scheduler_config(folder: Path) -> dict[str, Any]:
    """The noise-scheduler config of a diffusers-layout folder, without diffusers' `_` keys."""
    config = read_json(folder / "scheduler" / "scheduler_config.json")
    return {key: value for key, value in config.items() if not key.startswith("_")}


def text_encoder_config(folder: Path, subfolder: str) -> CLIPTextConfig:
    return CLIPTextConfig.from_pretrained(folder / subfolder, local_files_only=True)


def empty_base_model(family: ModelFamily, folder: Path | None = None) -> BaseModel:
    """The full-size `family` architecture on the meta device, from the bundled configs
    (or those of `folder`, a diffusers-layout folder of that family).

    No memory is allocated for weights, so the real SD1.5/SDXL module trees can be walked
    (parameter counts, LoRA module names) on any machine. Tokenizers are real.
    """
    folder = folder or bundled_config_dir(family)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoders = [
            cls(text_encoder_config(folder, subfolder)) for subfolder, cls in TEXT_ENCODERS[family]
        ]
    return assemble_base_model(
        folder, family, unet, vae, text_encoders, read_scheduler_config(folder)
    )


def assemble_base_model(
    source: Path,
    family: ModelFamily,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text_encoders: list[torch.nn.Module],
    scheduler_config: dict[str, Any],
) -> BaseModel:
    """Freeze the modules (eval mode, no gradients: LoRA trains beside them) and join them
    with the family's bundled tokenizers."""
    for module in (unet, vae, *text_encoders):
        module.eval().requires_grad_(False)
    return BaseModel(
        family=family,
        unet=unet,
        vae=vae,
        text_encoders=text_encoders,
        tokenizers=load_tokenizers(family),
        scheduler_config=scheduler_config,
        source=source,
    )
