"""`load_base_model`: a diffusers folder or an LDM single file, offline, in one dtype.

Single files are converted with diffusers' own LDM→diffusers functions
(`diffusers.loaders.single_file_utils`) into modules built from a diffusers-layout config
folder: the bundled full-size one of the detected family by default, or `config=`
(`model.config` in a training config) for a checkpoint of another size (head counts cannot
be read from tensor shapes, so the shapes alone cannot describe a model). Loading is
strict: a checkpoint that does not fit the config fails with a one-line error instead of
leaving random or meta weights behind.

Memory: the file is never held whole. Component by component (UNet, VAE, each text
encoder), the converter is handed a lazy view of the file (`CheckpointTensors`, `_Part`)
and reads each tensor once, cast to the target dtype as it arrives; the converted state
dict holds those very tensors (renamed, viewed, sliced), and `load_state_dict(assign=True)`
hands them to modules built on the meta device. So the peak is the weights in the target
dtype plus about one tensor. Casting before converting gives the same weights as
converting first: the converters only rename, view, slice, clone and transpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
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

from lorakit.errors import LorakitError
from lorakit.models.base import BaseModel, ModelFamily
from lorakit.models.checkpoint import brief
from lorakit.models.components import (
    TEXT_ENCODERS,
    assemble_base_model,
    bundled_config_dir,
    read_scheduler_config,
    text_encoder_config,
)
from lorakit.models.family import (
    SD15_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    detect_family,
    family_from_keys,
    parse_family,
    refuse_flux,
)
from lorakit.models.tensors import CheckpointTensors
from lorakit.progress import task

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
StateDict = dict[str, torch.Tensor]
TextEncoder = torch.nn.Module
# Where each text encoder of a single file keeps its weights, in BaseModel.text_encoders order.
TEXT_ENCODER_PREFIXES = {
    ModelFamily.SD15: (SD15_TE_PREFIX,),
    ModelFamily.SDXL: (SDXL_TE1_PREFIX, SDXL_TE2_PREFIX),
}


def check_dtype(dtype: torch.dtype, path: Path) -> None:
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
    check_dtype(dtype, path)
    if path.is_dir():
        resolved = _resolve_family(path, detect_family(path), family)
        if resolved is ModelFamily.FLUX1:
            refuse_flux(path, "a FLUX.1 diffusers folder")
        return _load_folder(path, resolved, dtype)
    state = CheckpointTensors(path, dtype)  # the header only, so far
    resolved = _resolve_family(path, family_from_keys(state.index, path), family)
    config_dir = Path(config).expanduser() if config is not None else bundled_config_dir(resolved)
    if not (config_dir / "unet" / "config.json").is_file():
        raise LorakitError(
            f"{config_dir}: not a diffusers config folder (no unet/config.json); point "
            "model.config at a diffusers model folder of the checkpoint's architecture"
        )
    return load_single_file_state(path, state, resolved, config_dir, dtype)


def _variant(part: Path) -> str | None:
    """ "fp16" when a component folder holds only the fp16 weights variant (hub downloads)."""
    plain = [f for f in part.glob("*.safetensors") if ".fp16." not in f.name]
    return "fp16" if not plain and any(part.glob("*.fp16.safetensors")) else None


def from_folder(cls: type, folder: Path, subfolder: str, **kwargs: object) -> torch.nn.Module:
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
    unet = from_folder(UNet2DConditionModel, folder, "unet", torch_dtype=dtype)
    vae = from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype)
    text_encoders = [
        from_folder(cls, folder, subfolder, dtype=dtype) for subfolder, cls in TEXT_ENCODERS[family]
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


class _Part(Mapping[str, torch.Tensor]):
    """The tensors of `state` under `prefix`, floating-point ones in `dtype`, each read
    only when a converter asks for it.

    The converters read every key once; lazily, a tensor they slice and clone (OpenCLIP's
    fused q/k/v `in_proj`) is dropped as soon as its pieces exist, instead of all of them
    staying alive beside their copies until the conversion ends.
    """

    def __init__(self, state: Mapping[str, torch.Tensor], prefix: str, dtype: torch.dtype):
        self._state, self._dtype = state, dtype
        self._keys = {key: None for key in state if key.startswith(prefix)}  # ordered set

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        tensor = self._state[key]
        return tensor.to(self._dtype) if tensor.is_floating_point() else tensor

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def fill_module(
    path: Path, what: str, build: Callable[[], torch.nn.Module], weights: StateDict
) -> torch.nn.Module:
    """Build `what` without allocating, then hand it `weights` (no copy), strictly."""
    with init_empty_weights():
        module = build()
    problems = _mismatch(module.state_dict(), weights)
    if problems:
        raise LorakitError(
            f"{path}: its {what} weights do not fit the model config: {problems}; the file is "
            "damaged or of another size (set model.config, or config=, to a diffusers folder "
            "of its architecture)"
        )
    module.load_state_dict(weights, strict=True, assign=True)
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


def _unet(
    path: Path, state: Mapping[str, torch.Tensor], folder: Path, dtype: torch.dtype
) -> torch.nn.Module:
    config = UNet2DConditionModel.load_config(folder / "unet")
    part = _Part(state, UNET_PREFIX, dtype)
    weights = _convert(path, "UNet", partial(convert_ldm_unet_checkpoint, part, config))
    return fill_module(path, "UNet", partial(UNet2DConditionModel.from_config, config), weights)


def _vae(
    path: Path, state: Mapping[str, torch.Tensor], folder: Path, dtype: torch.dtype
) -> torch.nn.Module:
    config = AutoencoderKL.load_config(folder / "vae")
    part = _Part(state, VAE_PREFIX, dtype)
    weights = _convert(path, "VAE", partial(convert_ldm_vae_checkpoint, part, config))
    return fill_module(path, "VAE", partial(AutoencoderKL.from_config, config), weights)


def _text_encoder_weights(
    part: Mapping[str, torch.Tensor], prefix: str, model: torch.nn.Module
) -> StateDict:
    """Diffusers/transformers keys for the text encoder whose LDM keys are `part`."""
    if prefix == SDXL_TE2_PREFIX:
        weights = convert_open_clip_checkpoint(model, part, prefix=prefix)
    else:
        weights = convert_ldm_clip_checkpoint(part)
    weights = {k: v for k, v in weights.items() if not k.endswith("position_ids")}
    if not hasattr(model, "text_model"):  # transformers 5 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    return weights


def _text_encoder(
    path: Path,
    state: Mapping[str, torch.Tensor],
    index: int,
    family: ModelFamily,
    folder: Path,
    dtype: torch.dtype,
) -> TextEncoder:
    subfolder, cls = TEXT_ENCODERS[family][index]
    prefix = TEXT_ENCODER_PREFIXES[family][index]
    build = partial(cls, text_encoder_config(folder, subfolder))
    with init_empty_weights():
        skeleton = build()
    what = f"text encoder {index + 1}"
    part = _Part(state, prefix, dtype)
    weights = _convert(path, what, partial(_text_encoder_weights, part, prefix, skeleton))
    return fill_module(path, what, build, weights)


def load_single_file_state(
    path: Path,
    state: Mapping[str, torch.Tensor],
    family: ModelFamily,
    config_dir: Path,
    dtype: torch.dtype,
) -> BaseModel:
    """A BaseModel from the LDM-layout tensors of `path` (`state`: a `CheckpointTensors`
    reading the file, or any mapping, e.g. of meta tensors to check a layout for free)."""
    count = len(TEXT_ENCODERS[family])
    with task(f"loading {path.name}", total=2 + count, unit="parts") as advance:
        unet = _unet(path, state, config_dir, dtype)
        advance()
        vae = _vae(path, state, config_dir, dtype)
        advance()
        text_encoders = []
        for index in range(count):
            text_encoders.append(_text_encoder(path, state, index, family, config_dir, dtype))
            advance()
    scheduler_dir = (
        config_dir if (config_dir / "scheduler").is_dir() else bundled_config_dir(family)
    )
    scheduler_config = read_scheduler_config(scheduler_dir)
    return assemble_base_model(path, family, unet, vae, text_encoders, scheduler_config)
