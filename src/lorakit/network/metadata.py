"""The metadata block other tools read from a LoRA file: sd-scripts' `ss_*` and `modelspec.*`.

A1111's LoRA tab, CivitAI's uploader and ComfyUI's info nodes show these keys (network
dim/alpha, base model, resolution, tag frequency). Values are strings, formatted the way
sd-scripts' `train_network.py` formats them (`str()` of the value, JSON for dicts,
`(512, 512)` for a resolution), so those readers parse them unchanged. A1111 JSON-decodes
values that start with `{` and then walks `ss_tag_frequency` as {folder: {tag: count}},
`ss_dataset_dirs` as {folder: {"n_repeats", "img_count"}} and `ss_bucket_info` as
{"buckets": {i: {"resolution", "count"}}}: those three are checked here, because a wrong
shape breaks its "training info" panel rather than failing loudly. The `modelspec.*` keys
follow sd-scripts' `library/sai_model_spec.py` (ModelSpec 1.0.1).
"""

from __future__ import annotations

import datetime
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path

from lorakit import __version__
from lorakit.errors import LorakitError
from lorakit.models import ModelFamily, file_hashes
from lorakit.network.config import LoRAConfig

BASE_MODEL_VERSION = {
    ModelFamily.SD15: "sd_v1",
    ModelFamily.SDXL: "sdxl_base_v1-0",
    ModelFamily.TINY: "lorakit_tiny",
}
ARCHITECTURE = {
    ModelFamily.SD15: "stable-diffusion-v1/lora",
    ModelFamily.SDXL: "stable-diffusion-xl-v1-base/lora",
    ModelFamily.TINY: "lorakit-tiny/lora",
}
# sd-scripts: SDXL LoRAs name the SAI implementation, SD1.x LoRAs diffusers.
IMPLEMENTATION = {
    ModelFamily.SD15: "diffusers",
    ModelFamily.SDXL: "https://github.com/Stability-AI/generative-models",
    ModelFamily.TINY: "diffusers",
}
DEFAULT_RESOLUTION = {ModelFamily.SD15: 512, ModelFamily.SDXL: 1024, ModelFamily.TINY: 64}
PREDICTION_TYPES = {"epsilon": "epsilon", "v_prediction": "v", "v": "v"}
MODELSPEC_VERSION = "1.0.1"
# Optional modelspec fields a caller may pass as keyword arguments (no `ss_` twin).
MODELSPEC_FIELDS = (
    "title",
    "author",
    "description",
    "license",
    "tags",
    "usage_hint",
    "trigger_phrase",
    "thumbnail",
)


def _is_counts(value: object, keys: tuple[str, ...] | None = None) -> bool:
    """A dict of ints (with exactly `keys`, when given)."""
    return (
        isinstance(value, dict)
        and (keys is None or set(value) == set(keys))
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values())
    )


# The structured values A1111's training-info panel walks, and the shape it expects.
_STRUCTURED = {
    "ss_tag_frequency": lambda v: all(_is_counts(tags) for tags in v.values()),
    "ss_dataset_dirs": lambda v: all(_is_counts(d, ("n_repeats", "img_count")) for d in v.values()),
    "ss_bucket_info": lambda v: isinstance(v.get("buckets"), dict),
}


def _format(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _structured(key: str, value: object) -> str:
    """`value` (a dict or its JSON) as JSON, after checking the shape readers expect."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if not (isinstance(parsed, dict) and _STRUCTURED[key](parsed)):
        raise LorakitError(
            f"metadata {key}: {str(value)[:60]!r} is not the JSON object sd-scripts writes; "
            "see lorakit.network.metadata for the expected shape"
        )
    return json.dumps(parsed, ensure_ascii=False)


def _take(training: dict[str, object], name: str) -> object:
    """Pop `name` or `ss_<name>` from the keyword arguments (None when absent)."""
    plain, prefixed = training.pop(name, None), training.pop(f"ss_{name}", None)
    return plain if plain is not None else prefixed


def _resolution(value: object) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if isinstance(value, tuple | list) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise LorakitError(f"resolution {value!r}: give an int or a (width, height) pair")


def network_module(config: LoRAConfig) -> str:
    """`ss_network_module`: sd-scripts' own LoRA, or LyCORIS' kohya module for the types
    only LyCORIS trains (DoRA, LoHa, LoKr), as kohya_ss records them."""
    return "networks.lora" if config.type == "lora" else "lycoris.kohya"


def network_args(config: LoRAConfig) -> dict[str, str]:
    """`--network_args` as sd-scripts records them (strings). LoRA: the conv part only
    when set. LyCORIS types: `algo` ("lora" + `dora_wd` for DoRA, "loha", "lokr" +
    `factor`), and as LyCORIS trains convs unless told otherwise, either the conv part
    or `preset = attn-mlp` (its preset without the ResNet convs)."""
    conv = (
        {"conv_dim": str(config.conv_rank), "conv_alpha": _format(config.effective_conv_alpha)}
        if config.conv_rank is not None
        else {}
    )
    if config.type == "lora":
        return conv
    args = {"algo": "lora" if config.type == "dora" else config.type}
    args |= conv or {"preset": "attn-mlp"}
    if config.type == "dora":
        args["dora_wd"] = "True"
    if config.type == "lokr":
        args["factor"] = str(config.factor)
    return args


def lora_metadata(
    family: ModelFamily | str, config: LoRAConfig, **training: object
) -> dict[str, str]:
    """`ss_*` + `modelspec.*` metadata for a LoRA of `family` built with `config`.

    Training settings come as keyword arguments named after sd-scripts' keys with or
    without the `ss_` prefix (`resolution=512`, `num_train_images=20`,
    `tag_frequency={"10_sks": {"sks": 20}}`, `training_started_at=time.time()`,
    `output_name="sks"`, ...). `None` values are left out. `prediction_type` and
    `clip_skip` also fill their modelspec keys; MODELSPEC_FIELDS (`title`, `author`,
    `trigger_phrase`, ...) only theirs. See `base_model_metadata` for the base's name/hashes.
    """
    family = ModelFamily(family)
    base = (BASE_MODEL_VERSION[family], ARCHITECTURE[family], IMPLEMENTATION[family])
    return base_lora_metadata(*base, DEFAULT_RESOLUTION[family], config, **training)


def base_lora_metadata(
    version: str,
    architecture: str,
    implementation: str,
    default_resolution: int,
    config: LoRAConfig,
    **training: object,
) -> dict[str, str]:
    """`lora_metadata` for a base named by its sd-scripts version (`ss_base_model_version`),
    modelspec architecture and implementation: the one body FLUX.1 shares with SD."""
    modelspec_extra = {key: training.pop(key) for key in MODELSPEC_FIELDS if key in training}
    started = float(_take(training, "training_started_at") or time.time())  # type: ignore[arg-type]
    resolution = _resolution(_take(training, "resolution") or default_resolution)
    meta: dict[str, str] = {
        "ss_network_module": network_module(config),
        "ss_network_dim": str(config.rank),
        "ss_network_alpha": _format(float(config.alpha)),
        "ss_network_dropout": _format(float(config.dropout)),
        "ss_base_model_version": version,
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
    for name, value in training.items():
        key = name if name.startswith("ss_") else f"ss_{name}"
        if value is not None:
            meta[key] = _structured(key, value) if key in _STRUCTURED else _format(value)
    spec = _modelspec(architecture, implementation, started, resolution, meta, modelspec_extra)
    meta.update(spec)
    return meta


def _modelspec(
    architecture: str,
    implementation: str,
    started: float,
    resolution: tuple[int, int],
    meta: Mapping[str, str],
    extra: Mapping[str, object],
) -> dict[str, str]:
    title = extra.get("title") or meta.get("ss_output_name") or f"LoRA@{int(started)}"
    spec = {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.implementation_version": f"lorakit/{__version__}",
        "modelspec.title": str(title),
        "modelspec.resolution": f"{resolution[0]}x{resolution[1]}",
        "modelspec.date": datetime.datetime.fromtimestamp(int(started)).isoformat(),
        "modelspec.prediction_type": PREDICTION_TYPES.get(
            meta.get("ss_prediction_type", ""), "epsilon"
        ),
    }
    if "ss_clip_skip" in meta:
        spec["modelspec.encoder_layer"] = meta["ss_clip_skip"]
    for key in MODELSPEC_FIELDS[1:]:
        if extra.get(key):
            spec[f"modelspec.{key}"] = _format(extra[key])
    return spec


def base_model_metadata(path: str | Path) -> dict[str, str]:
    """sd-scripts' keys naming the base checkpoint: `ss_sd_model_name` (the file or folder
    name), and for a single file `ss_sd_model_hash` (A1111's legacy 8-hex model hash) and
    `ss_new_sd_model_hash` (sha256). Hashing reads the whole file: call it once per run."""
    path = Path(path)
    meta = {"ss_sd_model_name": path.name}
    if path.is_file():
        hashes = file_hashes(path)
        meta["ss_sd_model_hash"] = hashes["legacy"]
        meta["ss_new_sd_model_hash"] = hashes["sha256"]
    return meta


def family_from_metadata(metadata: Mapping[str, str]) -> ModelFamily | None:
    """The base family a file's metadata names, or None when it names none we know."""
    version = metadata.get("ss_base_model_version", "")
    architecture = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or architecture.startswith("stable-diffusion-xl"):
        return ModelFamily.SDXL
    if version.startswith("sd_v1") or architecture.startswith("stable-diffusion-v1"):
        return ModelFamily.SD15
    if version == BASE_MODEL_VERSION[ModelFamily.TINY]:
        return ModelFamily.TINY
    return None


def adapter_alpha(metadata: Mapping[str, str], part: str, path: str, rank: int) -> float:
    """Alpha of one module from diffusers' `lora_adapter_metadata` (peft config); else rank."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return float(rank)
    config = json.loads(raw)
    for pattern, alpha in (config.get(f"{part}.alpha_pattern") or {}).items():
        plain = pattern.lstrip("^")
        if path == plain or path.endswith(f".{plain}") or re.fullmatch(pattern, path):
            return float(alpha)
    alpha = config.get(f"{part}.lora_alpha")
    return float(alpha) if alpha else float(rank)
