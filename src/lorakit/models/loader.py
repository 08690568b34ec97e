"""`load_base_model`: a diffusers folder or an LDM single file, offline, in one dtype.

Single files are converted with diffusers' own LDM→diffusers functions
(`diffusers.loaders.single_file_utils`) into modules built from a diffusers-layout config
folder: the bundled full-size one of the detected family by default, or `config=` for a
checkpoint of another size (head counts cannot be read from tensor shapes, so the shapes
alone cannot describe a model). Loading is strict: a checkpoint that does not fit the
config fails with a one-line error instead of leaving random or meta weights behind.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from rich.progress import Progress

from lorakit.errors import LorakitError
from lorakit.models.base import BaseModel, ModelFamily
from lorakit.models.checkpoint import brief, read_state_dict
from lorakit.models.components import (
    TEXT_ENCODERS,
    assemble_base_model,
    bundled_config_dir,
    read_scheduler_config,
    text_encoder_config,
)
from lorakit.models.family import (
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    detect_family,
    family_from_keys,
    parse_family,
)

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
StateDict = dict[str, torch.Tensor]
TextEncoder = torch.nn.Module


def _check_dtype(dtype: torch.dtype, path: Path) -> None:
    if dtype not in DTYPES:
        raise LorakitError(f"{path}: cannot load in {dtype}; use float32, float16 or bfloat16")


def _resolve_family(
    path: Path, detected: ModelFamily, requested: str | ModelFamily | None
) -> ModelFamily:
    """The detected family, checked against the one the user asked for (if any)."""
    wanted = detected if requested is None else parse_family(requested, path)
    if wanted is not detected:
        raise LorakitError(
            f"{path}: is a model of family {detected.value}, not {wanted.value}; drop the family "
            "option or give a matching checkpoint"
        )
    return detected


def load_base_model(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    family: str | ModelFamily | None = None,
    config: str | Path | None = None,
) -> BaseModel:
    """Load a base model with no network access.

    `path` is a diffusers folder (with model_index.json) or an SD1.5/SDXL single file
    (`.safetensors`, or `.ckpt`/`.pt` read with `weights_only=True`). `family`, when given,
    must match what the file holds. `config` is a diffusers-layout folder describing a
    single file whose sizes differ from the released models (default: bundled configs).
    """
    path = Path(path).expanduser()
    _check_dtype(dtype, path)
    if path.is_dir():
        resolved = _resolve_family(path, detect_family(path), family)
        return _load_folder(path, resolved, dtype)
    state = read_state_dict(path)
    resolved = _resolve_family(path, family_from_keys(list(state), path), family)
    config_dir = Path(config) if config is not None else bundled_config_dir(resolved)
    if not (config_dir / "unet" / "config.json").is_file():
        raise LorakitError(f"{config_dir}: not a diffusers config folder (no unet/config.json)")
    return load_single_file_state(path, state, resolved, config_dir, dtype)


def _variant(part: Path) -> str | None:
    """ "fp16" when a component folder holds only the fp16 weights variant (hub downloads)."""
    plain = [f for f in part.glob("*.safetensors") if ".fp16." not in f.name]
    return "fp16" if not plain and any(part.glob("*.fp16.safetensors")) else None


def _from_folder(cls: type, folder: Path, subfolder: str, **kwargs: object) -> torch.nn.Module:
    """One component of a diffusers folder; a missing or broken part is a user error."""
    part = folder / subfolder
    try:
        return cls.from_pretrained(
            folder, subfolder=subfolder, variant=_variant(part), local_files_only=True, **kwargs
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise LorakitError(
            f"{part}: cannot load {cls.__name__} ({brief(exc)}); the model folder is "
            "incomplete or damaged: download it again"
        ) from None


def _load_folder(folder: Path, family: ModelFamily, dtype: torch.dtype) -> BaseModel:
    """A diffusers folder, component by component (its own tokenizers are not needed)."""
    unet = _from_folder(UNet2DConditionModel, folder, "unet", torch_dtype=dtype)
    vae = _from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype)
    text_encoders = [
        _from_folder(cls, folder, subfolder, dtype=dtype)
        for subfolder, cls in TEXT_ENCODERS[family]
    ]
    scheduler_config = read_scheduler_config(folder)
    return assemble_base_model(folder, family, unet, vae, text_encoders, scheduler_config)


def _mismatch(expected: StateDict, weights: StateDict) -> str:
    """What keeps `weights` from filling a module whose state dict is `expected`, or ""."""
    problems = {
        "missing": [key for key in expected if key not in weights],
        "unexpected": [key for key in weights if key not in expected],
        "of another shape": [
            key
            for key, value in weights.items()
            if key in expected and value.shape != expected[key].shape
        ],
    }
    return ", ".join(
        f"{len(keys)} {label} (e.g. {keys[0]})" for label, keys in problems.items() if keys
    )


def _fill(
    path: Path,
    what: str,
    build: Callable[[], torch.nn.Module],
    weights: StateDict,
    dtype: torch.dtype,
) -> torch.nn.Module:
    """Build `what` without allocating, then assign `weights` strictly in `dtype`."""
    with init_empty_weights():
        module = build()
    problems = _mismatch(module.state_dict(), weights)
    if problems:
        raise LorakitError(
            f"{path}: its {what} weights do not fit the model config: {problems}; the file is "
            "damaged or of another size (pass config=<diffusers folder of its architecture>)"
        )
    module.load_state_dict(
        {key: value.to(dtype) for key, value in weights.items()}, strict=True, assign=True
    )
    return module


def _convert(path: Path, what: str, convert: Callable[[], StateDict]) -> StateDict:
    """Run a diffusers LDM converter; a key it needs but the file lacks is a bad file."""
    try:
        return convert()
    except (KeyError, IndexError) as exc:
        raise LorakitError(
            f"{path}: its {what} lacks weight {exc}; the file is damaged or not a full "
            "SD1.5/SDXL checkpoint"
        ) from None


def _unet(path: Path, state: StateDict, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    config = UNet2DConditionModel.load_config(folder / "unet")
    weights = _convert(path, "UNet", partial(convert_ldm_unet_checkpoint, state, config))
    return _fill(path, "UNet", partial(UNet2DConditionModel.from_config, config), weights, dtype)


def _vae(path: Path, state: StateDict, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    config = AutoencoderKL.load_config(folder / "vae")
    weights = _convert(path, "VAE", partial(convert_ldm_vae_checkpoint, state, config))
    return _fill(path, "VAE", partial(AutoencoderKL.from_config, config), weights, dtype)


def _text_encoder_weights(
    state: StateDict, family: ModelFamily, index: int, model: torch.nn.Module
) -> StateDict:
    """Diffusers/transformers keys for text encoder `index` of a single file."""
    if family is ModelFamily.SDXL and index == 1:
        weights = convert_open_clip_checkpoint(model, state, prefix=SDXL_TE2_PREFIX)
    else:
        only = {k: v for k, v in state.items() if k.startswith(SDXL_TE1_PREFIX)} or state
        weights = convert_ldm_clip_checkpoint(only)
    weights = {k: v for k, v in weights.items() if not k.endswith("position_ids")}
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return weights


def _text_encoders(
    path: Path, state: StateDict, family: ModelFamily, folder: Path, dtype: torch.dtype
) -> list[TextEncoder]:
    encoders = []
    for index, (subfolder, cls) in enumerate(TEXT_ENCODERS[family]):
        build = partial(cls, text_encoder_config(folder, subfolder))
        with init_empty_weights():
            skeleton = build()
        what = f"text encoder {index + 1}"
        weights = _convert(
            path, what, partial(_text_encoder_weights, state, family, index, skeleton)
        )
        encoders.append(_fill(path, what, build, weights, dtype))
    return encoders


def load_single_file_state(
    path: Path, state: StateDict, family: ModelFamily, config_dir: Path, dtype: torch.dtype
) -> BaseModel:
    """A BaseModel from an LDM-layout state dict already read from `path`.

    Works on meta tensors too, which lets the full-size layouts be checked without memory.
    """
    with Progress(transient=True) as progress:
        task = progress.add_task(f"loading {path.name}", total=3)
        unet = _unet(path, state, config_dir, dtype)
        progress.advance(task)
        vae = _vae(path, state, config_dir, dtype)
        progress.advance(task)
        text_encoders = _text_encoders(path, state, family, config_dir, dtype)
        progress.advance(task)
    scheduler_dir = (
        config_dir if (config_dir / "scheduler").is_dir() else bundled_config_dir(family)
    )
    scheduler_config = read_scheduler_config(scheduler_dir)
    return assemble_base_model(path, family, unet, vae, text_encoders, scheduler_config)
