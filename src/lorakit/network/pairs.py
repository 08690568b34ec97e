"""A LoRA file as per-module (down, up, alpha) pairs in fp32: what resize and merge work on.

Conv modules are flattened to matrices (`down` r×(in·kh·kw), `up` out×r) so one code path
serves Linear, 1×1 and 3×3 (LoCon) modules; `LoRAPair.like` puts new factors back in the
file's own tensor layout. Files are refused before their tensors are read when their keys
say they are not a LoRA at all, or a LyCORIS type these tools do not handle.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily
from lorakit.network.convert import diffusers_to_kohya
from lorakit.network.detect import detect_lora_family, is_kohya_format
from lorakit.network.files import SUFFIXES, ModuleDims, load_lora_file, module_dims, split_key
from lorakit.network.flux import is_flux_lora
from lorakit.network.flux_files import flux_kohya_state, flux_lora_metadata, flux_variant
from lorakit.network.lora import config_from_dims
from lorakit.network.metadata import lora_metadata

# Key parts that mark the LyCORIS network types, whose update is not `up @ down`.
_LYCORIS_MARKERS = {
    ".hada_": "LoHa",
    ".lokr_": "LoKr",
    ".dora_scale": "DoRA",
    ".on_input": "(IA)³",
    ".oft_": "OFT",
    ".a1.weight": "GLoRA",
    ".diff": "full-difference",  # `.diff` and `.diff_b`
}
_LORA_KEY_ENDS = (".lora_down.weight", ".lora_A.weight", ".lora.down.weight")
_DELTA_KINDS = {"LoHa", "LoKr", "DoRA"}  # LyCORIS types whose ΔW kinds.py computes


@dataclass(frozen=True)
class LoRAPair:
    """One module: ΔW = alpha / rank · up @ down (matrices), and the file's tensor shapes."""

    down: torch.Tensor
    up: torch.Tensor
    alpha: float
    down_shape: tuple[int, ...]
    up_shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def is_conv(self) -> bool:
        """A k×k conv (LoCon): sized by `--conv-rank`, as in sd-scripts."""
        return len(self.down_shape) == 4 and self.down_shape[2:] != (1, 1)

    @property
    def delta_shape(self) -> tuple[int, ...]:
        """The shape of the layer weight ΔW adds to: (out, in) or (out, in, kh, kw)."""
        return (self.up_shape[0], *self.down_shape[1:])

    def delta(self) -> torch.Tensor:
        """ΔW as an out×(in·kh·kw) matrix, alpha/rank applied."""
        return (self.up @ self.down) * self.scale

    @classmethod
    def for_weight(
        cls, shape: tuple[int, ...], up: torch.Tensor, down: torch.Tensor, alpha: float
    ) -> LoRAPair:
        """Factors of an update to a layer weight of `shape`, in sd-scripts' layout: a
        conv's `down` keeps the kernel and its `up` is 1×1."""
        rank = int(down.shape[0])
        up_shape = (shape[0], rank, 1, 1) if len(shape) == 4 else (shape[0], rank)
        return cls(down.contiguous(), up.contiguous(), float(alpha), (rank, *shape[1:]), up_shape)

    def like(self, up: torch.Tensor, down: torch.Tensor, alpha: float) -> LoRAPair:
        """New factors (any rank) in this module's tensor layout."""
        rank = int(down.shape[0])
        return LoRAPair(
            down.contiguous(),
            up.contiguous(),
            float(alpha),
            (rank, *self.down_shape[1:]),
            (self.up_shape[0], rank, *self.up_shape[2:]),
        )

    def tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(down, up) in the file's layout and `dtype`."""
        return self.down.reshape(self.down_shape).to(dtype), self.up.reshape(self.up_shape).to(
            dtype
        )


@dataclass
class LoRAFile:
    """A kohya LoRA read into pairs, with what the tools need to write its successor."""

    path: Path
    family: ModelFamily
    metadata: dict[str, str]
    pairs: dict[str, LoRAPair]
    dtype: torch.dtype  # the weights' (most common) dtype: the default for what is written


def _check_keys(path: Path, lycoris: bool = False) -> None:
    """Refuse a safetensors file whose header shows it is no LoRA lorakit can rework
    (with `lycoris`, LoHa/LoKr/DoRA files pass: their ΔW is known, see kinds.py)."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return
    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except (SafetensorError, OSError, ValueError):
        return  # load_lora_file words the error
    modules = [key for key in keys if key.startswith(("lora_unet_", "lora_te"))]
    kinds = sorted({kind for key in modules for m, kind in _LYCORIS_MARKERS.items() if m in key})
    known = _DELTA_KINDS if lycoris else set()
    if set(kinds) - known:
        raise LorakitError(
            f"{path}: a {'/'.join(kinds)} network (LyCORIS); "
            + (
                "merging into a model handles LoRA/LoCon/DoRA/LoHa/LoKr files only"
                if lycoris
                else "resize and merge handle LoRA/LoCon files only"
            )
        )
    if not kinds and not any(key.endswith(_LORA_KEY_ENDS) for key in keys):
        raise LorakitError(
            f"{path}: holds no LoRA weights ({len(keys)} tensors, none `.lora_down.weight`); "
            "give a LoRA file (a checkpoint goes to --model)"
        )


def _pair(name: str, tensors: Mapping[str, torch.Tensor], alpha: float, source: Path) -> LoRAPair:
    down, up = tensors.get(SUFFIXES[0]), tensors.get(SUFFIXES[1])
    if down is None or up is None:
        raise LorakitError(f"{source}: module {name} lacks lora_up or lora_down; it is damaged")
    down2d = down.float().reshape(down.shape[0], -1)
    up2d = up.float().reshape(up.shape[0], -1)
    if up2d.shape[1] != down2d.shape[0]:
        raise LorakitError(
            f"{source}: module {name} has rank {down2d.shape[0]} down but {up2d.shape[1]} up; "
            "the file is damaged"
        )
    return LoRAPair(down2d, up2d, alpha, tuple(down.shape), tuple(up.shape))


@dataclass
class ModulesFile:
    """A kohya file of any type read as tensors by module name and suffix."""

    path: Path
    family: ModelFamily
    metadata: dict[str, str]
    state: dict[str, torch.Tensor]  # kohya keys (diffusers files converted)
    modules: dict[str, dict[str, torch.Tensor]]


def read_modules(path: str | Path, lycoris: bool = False, flux: bool = False) -> ModulesFile:
    """Read a kohya (or diffusers/peft) file by module; LoHa/LoKr/DoRA only with
    `lycoris`, FLUX.1 LoRAs only with `flux` (for tools that never meet its base model);
    one-line errors."""
    path = Path(path)
    _check_keys(path, lycoris)
    state, metadata = load_lora_file(path)
    if flux and is_flux_lora(state, metadata):
        family = ModelFamily.FLUX1
        state = flux_kohya_state(state, metadata, str(path))
    else:
        family = detect_lora_family(state, metadata, str(path))
    if not is_kohya_format(state):
        state = diffusers_to_kohya(state, family, metadata, str(path))
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name, suffix = split_key(key)
        grouped.setdefault(name, {})[suffix] = value
    return ModulesFile(path, family, metadata, state, grouped)


def read_lora(path: str | Path) -> LoRAFile:
    """Read a kohya (or diffusers/peft) LoRA file into fp32 pairs; one-line errors.

    FLUX.1 files are read too: resizing and merging LoRA files is the same algebra on any
    pair, and sd-scripts' FLUX.1 modules are plain (fused q/k/v) pairs."""
    read = read_modules(path, flux=True)
    dims = module_dims(read.state, str(read.path))
    pairs = {name: _pair(name, read.modules[name], dims[name].alpha, read.path) for name in dims}
    dtypes = Counter(t.dtype for k, t in read.state.items() if not k.endswith(".alpha"))
    return LoRAFile(read.path, read.family, read.metadata, pairs, dtypes.most_common(1)[0][0])


def pairs_state(pairs: Mapping[str, LoRAPair], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """kohya tensors of `pairs`: `.lora_down.weight`, `.lora_up.weight`, 0-d `.alpha`."""
    state: dict[str, torch.Tensor] = {}
    for name, pair in pairs.items():
        down, up = pair.tensors(dtype)
        state[f"{name}.lora_down.weight"] = down
        state[f"{name}.lora_up.weight"] = up
        state[f"{name}.alpha"] = torch.tensor(pair.alpha, dtype=dtype)
    return state


def _network_args(previous: str | None, fresh: str | None) -> str | None:
    """Previous `ss_network_args` with conv_dim/conv_alpha replaced by the new ones."""
    try:
        args = json.loads(previous) if previous else {}
    except json.JSONDecodeError:
        args = {}
    if not isinstance(args, dict):
        args = {}
    args = {k: v for k, v in args.items() if k not in ("conv_dim", "conv_alpha")}
    args |= json.loads(fresh) if fresh else {}
    return json.dumps(args) if args else None


def reworked_metadata(
    family: ModelFamily,
    pairs: Mapping[str, LoRAPair],
    comment: str,
    previous: Mapping[str, str] | None = None,
    dynamic: bool = False,
) -> dict[str, str]:
    """Metadata for a file made from others: theirs, with dims, alpha and args made true.

    sd-scripts' keys are kept from `previous` (training settings, tags, hashes of the
    base); the network dim/alpha and the conv part of its args are recomputed from the new
    pairs (the most common values, or "Dynamic" as sd-scripts writes for dynamic ranks);
    `comment` goes in front of `ss_training_comment`. Old `sshs_*` hashes are dropped:
    they are recomputed when the file is written.
    """
    previous = previous or {}
    dims = {name: ModuleDims(p.rank, p.alpha, p.is_conv) for name, p in pairs.items()}
    config = config_from_dims(dims)
    if family is ModelFamily.FLUX1:
        fresh = flux_lora_metadata(flux_variant(previous), config)
    else:
        fresh = lora_metadata(family, config)
    meta = fresh | {k: v for k, v in previous.items() if not k.startswith("sshs_")}
    for key in ("ss_network_dim", "ss_network_alpha"):
        meta[key] = "Dynamic" if dynamic else fresh[key]
    meta.pop("ss_network_args", None)
    args = _network_args(previous.get("ss_network_args"), fresh.get("ss_network_args"))
    if args:
        meta["ss_network_args"] = args
    old_comment = previous.get("ss_training_comment")
    meta["ss_training_comment"] = f"{comment}; {old_comment}" if old_comment else comment
    return meta
