"""The metadata block other tools read from a LoRA file: sd-scripts' `ss_*` and `modelspec.*`.

A1111's LoRA tab, CivitAI's uploader and ComfyUI's info nodes show these keys (network
dim/alpha, base model, resolution, tag frequency). Values are strings, formatted the way
sd-scripts formats them (JSON for dicts, `str()` for the rest, `(512, 512)` for a
resolution), so those readers parse them unchanged.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Mapping

from lorakit import __version__
from lorakit.errors import LorakitError
from lorakit.models.base import ModelFamily
from lorakit.network.config import LoRAConfig

BASE_MODEL_VERSION = {ModelFamily.SD15: "sd_v1", ModelFamily.SDXL: "sdxl_base_v1-0"}
ARCHITECTURE = {
    ModelFamily.SD15: "stable-diffusion-v1/lora",
    ModelFamily.SDXL: "stable-diffusion-xl-v1-base/lora",
}
# sd-scripts: SDXL LoRAs name the SAI implementation, SD1.x LoRAs diffusers.
IMPLEMENTATION = {
    ModelFamily.SD15: "diffusers",
    ModelFamily.SDXL: "https://github.com/Stability-AI/generative-models",
}
DEFAULT_RESOLUTION = {ModelFamily.SD15: 512, ModelFamily.SDXL: 1024}
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "v": "v"}


def _format(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _resolution(value: object) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, tuple | list) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise LorakitError(f"resolution {value!r}: give an int or a (width, height) pair")


def network_args(config: LoRAConfig) -> dict[str, str]:
    """sd-scripts' `--network_args` as it records them (strings, conv part only when set)."""
    if config.conv_rank is None:
        return {}
    return {"conv_dim": str(config.conv_rank), "conv_alpha": _format(config.effective_conv_alpha)}


def lora_metadata(
    family: ModelFamily | str, config: LoRAConfig, **training: object
) -> dict[str, str]:
    """`ss_*` + `modelspec.*` metadata for a LoRA of `family` built with `config`.

    Training settings come as keyword arguments named after sd-scripts' keys with or
    without the `ss_` prefix (`resolution=512`, `num_train_images=20`,
    `tag_frequency={"10_sks": {"sks": 20}}`, `training_started_at=time.time()`,
    `output_name="sks"`, ...). `None` values are left out. `prediction_type` and
    `clip_skip` also fill their modelspec keys; `title`/`author`/`description` only those.
    """
    family = ModelFamily(family)
    modelspec_extra = {
        key: training.pop(key) for key in ("title", "author", "description") if key in training
    }
    started = float(
        training.pop("training_started_at", training.pop("ss_training_started_at", time.time()))
    )  # type: ignore[arg-type]
    resolution = _resolution(
        training.pop("resolution", training.pop("ss_resolution", DEFAULT_RESOLUTION[family]))
    )
    meta: dict[str, str] = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": _format(float(config.alpha)),
        "ss_network_dropout": _format(float(config.dropout)),
        "ss_base_model_version": BASE_MODEL_VERSION[family],
        "ss_v2": "False",
        "ss_training_started_at": repr(started),
        "ss_resolution": str(resolution),
        "ss_network_train_unet_only": str(not config.train_text_encoder),
        "ss_network_train_text_encoder_only": str(not config.train_unet),
        "ss_training_comment": f"lorakit {__version__}",
    }
    args = network_args(config)
    if args:
        meta["ss_network_args"] = json.dumps(args)
    for key, value in training.items():
        if value is not None:
            meta[key if key.startswith("ss_") else f"ss_{key}"] = _format(value)
    meta.update(_modelspec(family, started, resolution, meta, modelspec_extra))
    return meta


def _modelspec(
    family: ModelFamily,
    started: float,
    resolution: tuple[int, int],
    meta: Mapping[str, str],
    extra: Mapping[str, object],
) -> dict[str, str]:
    title = extra.get("title") or meta.get("ss_output_name") or f"LoRA@{int(started)}"
    spec = {
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[family],
        "modelspec.implementation": IMPLEMENTATION[family],
        "modelspec.title": str(title),
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(started)).isoformat(),
        "modelspec.prediction_type": PREDICTION_TYPES.get(
            meta.get("ss_prediction_type", ""), "epsilon"
        ),
    }
    if "ss_clip_skip" in meta:
        spec["modelspec.encoder_layer"] = meta["ss_clip_skip"]
    for key in ("author", "description"):
        if extra.get(key):
            spec[f"modelspec.{key}"] = str(extra[key])
    return spec


def family_from_metadata(metadata: Mapping[str, str]) -> ModelFamily | None:
    """The base family a file's metadata names, or None when it names none we know."""
    version = metadata.get("ss_base_model_version", "")
    architecture = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or architecture.startswith("stable-diffusion-xl"):
        return ModelFamily.SDXL
    if version.startswith("sd_v1") or architecture.startswith("stable-diffusion-v1"):
        return ModelFamily.SD15
    return None
