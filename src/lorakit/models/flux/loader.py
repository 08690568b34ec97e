"""`load_flux_model`: FLUX.1 from the files people have, offline, streamed like the SD loader.

The transformer comes from a BFL single file or an all-in-one checkpoint; CLIP-L, T5-XXL
and the VAE from the same all-in-one file or from their own files (`clip_l`, `t5xxl`,
`ae`); or everything from a diffusers folder. Modules are built from the bundled config of
the detected variant (or `config=`, a diffusers-layout folder for another size) on the meta
device and handed the file's tensors, read one at a time and cast as they arrive, so the
peak is the weights in the target dtype plus about one tensor (fp8 files are read the same
way, widened on the way in). With `fp8_base` the block Linears' weights are read into
float8 the same way (an fp8 file's as stored), so FLUX.1 dev's transformer peaks near its
12 GB in fp8, not the 24 GB of bf16 first. Anything missing or not fitting is a one-line
LorakitError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from lorakit.errors import LorakitError
from lorakit.models.components import read_scheduler_config
from lorakit.models.flux.convert import bfl_to_diffusers, transformer_rules
from lorakit.models.flux.detect import detect_flux, folder_variant
from lorakit.models.flux.keys import FluxLayout, component_prefix
from lorakit.models.flux.memory import FP8, block_linears, to_fp8_base
from lorakit.models.flux.model import FluxModel, assemble_flux_model, bundled_flux_dir
from lorakit.models.loader import check_dtype, fill_module, from_folder
from lorakit.models.tensors import CheckpointTensors
from lorakit.progress import task

StateDict = dict[str, torch.Tensor]
_CLIP_EXTRAS = ("position_ids", "text_projection.weight", "logit_scale")
_WHAT = {"clip": "CLIP-L text encoder", "t5": "T5-XXL text encoder", "vae": "VAE"}
_OPTION = {"clip": "clip_l", "t5": "t5xxl", "vae": "ae"}
SCALED_FP8_KEYS = ("scaled_fp8", ".scale_weight")


def load_flux_model(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    clip_l: str | Path | None = None,
    t5xxl: str | Path | None = None,
    ae: str | Path | None = None,
    config: str | Path | None = None,
    fp8_base: bool = False,
) -> FluxModel:
    """Load FLUX.1 with no network access.

    `path` is a diffusers FluxPipeline folder, a BFL transformer file or an all-in-one
    checkpoint; `clip_l`, `t5xxl` and `ae` name separate files for what `path` lacks (or
    replace what it holds). `config` describes a model whose sizes differ from FLUX.1's.
    `fp8_base` gives the transformer `to_fp8_base`'s float8 block weights, bit for bit
    (each read in `dtype`, then cast), without holding it in `dtype` whole.
    """
    path = Path(path).expanduser()
    check_dtype(dtype, path)
    if path.is_dir():
        model = _load_folder(path, dtype)
        if fp8_base:  # diffusers reads the folder: converted after, at the bf16 peak
            to_fp8_base(model.transformer)
        return model
    state = CheckpointTensors(path, dtype)
    layout = detect_flux(path, state.index)
    _refuse_scaled_fp8(path, state.index)
    folder = Path(config).expanduser() if config else bundled_flux_dir(layout.variant)
    if not (folder / "transformer" / "config.json").is_file():
        raise LorakitError(
            f"{folder}: not a FLUX diffusers config folder (no transformer/config.json)"
        )
    extra = {"clip": clip_l, "t5": t5xxl, "vae": ae}
    missing = [name for name, file in extra.items() if file is None and not getattr(layout, name)]
    if missing:
        raise LorakitError(
            f"{path}: a {layout.name} file without {', '.join(_WHAT[n] for n in missing)}; "
            f"give the {', '.join(_OPTION[n] for n in missing)} file(s) too "
            f"(e.g. {_OPTION[missing[0]]}.safetensors)"
        )
    sources = {name: _source(path, state, layout, name, extra[name], dtype) for name in extra}
    with task(f"loading {path.name}", total=4, unit="parts") as advance:
        transformer = _transformer(path, state, layout, folder, fp8_base)
        advance()
        vae = _vae(*sources["vae"], folder)
        advance()
        clip = _clip(*sources["clip"], folder)
        advance()
        t5 = _t5(*sources["t5"], folder)
        advance()
    scheduler = read_scheduler_config(
        folder if (folder / "scheduler").is_dir() else bundled_flux_dir(layout.variant)
    )
    return assemble_flux_model(path, layout.variant, transformer, vae, [clip, t5], scheduler)


def _load_folder(folder: Path, dtype: torch.dtype) -> FluxModel:
    variant = folder_variant(folder)
    transformer = from_folder(FluxTransformer2DModel, folder, "transformer", torch_dtype=dtype)
    vae = from_folder(AutoencoderKL, folder, "vae", torch_dtype=dtype)
    clip = from_folder(CLIPTextModel, folder, "text_encoder", dtype=dtype)
    t5 = from_folder(T5EncoderModel, folder, "text_encoder_2", dtype=dtype)
    scheduler = read_scheduler_config(folder)
    return assemble_flux_model(folder, variant, transformer, vae, [clip, t5], scheduler)


Source = tuple[Path, Mapping[str, torch.Tensor]]


def _source(
    path: Path,
    state: CheckpointTensors,
    layout: FluxLayout,
    name: str,
    extra: str | Path | None,
    dtype: torch.dtype,
) -> Source:
    """The file and the lazily read tensors (prefix removed) that hold component `name`."""
    if extra is None:
        return path, _Stripped(state, getattr(layout, name))
    file = Path(extra).expanduser()
    tensors = CheckpointTensors(file, dtype)
    _refuse_scaled_fp8(file, tensors.index)
    prefix = component_prefix(tensors.index, name)
    if prefix is None:
        raise LorakitError(
            f"{file}: not a {_WHAT[name]} file ({len(tensors.index)} tensors, none of its "
            f"keys); check the {_OPTION[name]} file"
        )
    return file, _Stripped(tensors, prefix)


def _refuse_scaled_fp8(path: Path, keys: Mapping[str, object]) -> None:
    """ComfyUI's "scaled" fp8 files (`*_fp8_scaled`) store each weight divided by a
    `scale_weight` tensor; read as plain fp8 they would load wrong weights silently."""
    if any(key.endswith(SCALED_FP8_KEYS) for key in keys):
        raise LorakitError(
            f"{path}: a scaled-fp8 file (per-weight scale_weight), which lorakit does not "
            "read; use the fp16/bf16 file or the plain fp8 (e4m3fn) one"
        )


class _Stripped(Mapping[str, torch.Tensor]):
    """The tensors of `state` (a file read lazily, already cast) under `prefix`, keyed
    without it: each component's converter sees its own keys as in a separate file."""

    def __init__(self, state: Mapping[str, torch.Tensor], prefix: str) -> None:
        self._state, self._prefix = state, prefix
        self._keys = [key[len(prefix) :] for key in state if key.startswith(prefix)]

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._state[self._prefix + key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def _transformer(
    path: Path, state: CheckpointTensors, layout: FluxLayout, folder: Path, fp8_base: bool
) -> torch.nn.Module:
    """The transformer from the BFL tensors of `state`, in its dtype; with `fp8_base` the
    block Linears' weights are read straight into float8 (the rounding of a load in its
    dtype converted afterwards; an fp8 file's as stored), then split as views."""
    config = FluxTransformer2DModel.load_config(folder / "transformer")
    if bool(config.get("guidance_embeds")) != (layout.variant == "dev"):
        raise LorakitError(
            f"{path}: a {layout.name} transformer, but the config at {folder} is for the "
            "other variant (guidance input); give the config of its variant"
        )
    build = partial(FluxTransformer2DModel.from_config, config)
    with init_empty_weights():
        empty = build()
    shapes = {key: value.shape for key, value in empty.state_dict().items()}
    rules = transformer_rules(config)
    fp8 = {f"{name}.weight" for name in block_linears(empty)} if fp8_base else set()
    kept = {
        f"{layout.transformer}{rule.bfl}.{bfl}"
        for rule in rules
        for bfl, param in rule.params
        if all(f"{module}.{param}" in fp8 for module in rule.diffusers)
    }
    part = _Stripped(_ReadAs(state, kept, FP8), layout.transformer)
    try:
        weights = bfl_to_diffusers(part, rules, shapes)
    except (KeyError, ValueError) as exc:
        raise LorakitError(
            f"{path}: its {layout.name} transformer does not fit the config at {folder} "
            f"({exc}); the file is damaged or of another size (set config= to a diffusers "
            "folder of its architecture)"
        ) from None
    used = {f"{rule.bfl}.{param}" for rule in rules for param, _ in rule.params}
    left = [key for key in part if key not in used and _is_transformer_key(key, layout)]
    if left:
        raise LorakitError(
            f"{path}: {len(left)} transformer weights the config has no place for (e.g. "
            f"{left[0]}); the file is of another size (set config= to its diffusers folder)"
        )
    transformer = fill_module(path, "transformer", build, weights)
    if fp8_base:  # the weights are float8 already: this checks their range, copies nothing
        to_fp8_base(transformer)
    return transformer


class _ReadAs(Mapping[str, torch.Tensor]):
    """`state` with the tensors of `keys` read in `target` (`CheckpointTensors.read_via`)."""

    def __init__(self, state: CheckpointTensors, keys: set[str], target: torch.dtype) -> None:
        self._state, self._keys, self._target = state, keys, target

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self._keys:
            return self._state.read_via(key, self._target)
        return self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)


def _is_transformer_key(key: str, layout: FluxLayout) -> bool:
    """A key of the transformer itself, not of an encoder or VAE in the same file."""
    others = [prefix for prefix in (layout.clip, layout.t5, layout.vae) if prefix]
    return not any(key.startswith(prefix) for prefix in others)


def _vae(path: Path, part: Mapping[str, torch.Tensor], folder: Path) -> torch.nn.Module:
    config = AutoencoderKL.load_config(folder / "vae")
    try:
        weights = convert_ldm_vae_checkpoint(part, config)
    except (KeyError, IndexError) as exc:
        raise LorakitError(
            f"{path}: its VAE lacks weight {exc}; the file is damaged or not FLUX.1's "
            "16-channel VAE (ae.safetensors)"
        ) from None
    return fill_module(path, "VAE", partial(AutoencoderKL.from_config, config), weights)


def _clip(path: Path, part: Mapping[str, torch.Tensor], folder: Path) -> torch.nn.Module:
    build = partial(CLIPTextModel, CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    weights = {key: part[key] for key in part if not key.endswith(_CLIP_EXTRAS)}
    with init_empty_weights():
        flat = not hasattr(build(), "text_model")  # transformers 5 dropped the level
    if flat:
        weights = {key.removeprefix("text_model."): value for key, value in weights.items()}
    return fill_module(path, "CLIP-L text encoder", build, weights)


def _t5(path: Path, part: Mapping[str, torch.Tensor], folder: Path) -> torch.nn.Module:
    """T5's token embedding is one tensor under two names (`shared`, `encoder.embed_tokens`);
    files keep either or both."""
    build = partial(T5EncoderModel, T5Config.from_pretrained(folder / "text_encoder_2"))
    weights: StateDict = {key: part[key] for key in part}
    embedding = weights.get("shared.weight", weights.get("encoder.embed_tokens.weight"))
    if embedding is not None:
        weights["shared.weight"] = weights["encoder.embed_tokens.weight"] = embedding
    return fill_module(path, "T5-XXL text encoder", build, weights)
