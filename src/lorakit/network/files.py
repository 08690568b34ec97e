"""Reading and writing LoRA files (safetensors), and what their keys say about the network.

Writes are atomic and carry sd-scripts' `sshs_*` hashes (computed exactly as sd-scripts
does) so A1111's additional-networks index and model sites recognise the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_bytes
from lorakit.network.kinds import module_alpha, module_kind, module_rank

SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
_PICKLE_SUFFIXES = (".pt", ".ckpt", ".bin", ".pth")


@dataclass(frozen=True)
class ModuleDims:
    """Rank, alpha, layer kind and network type of one module, read from its weights
    (alpha defaults to rank; a LoKr with both sides full has scale 1: rank = alpha)."""

    rank: int
    alpha: float
    is_conv: bool  # a k×k conv (LoCon); 1×1 convs count as linear, as in sd-scripts
    kind: str = "lora"  # lorakit.network.kinds: "lora", "dora", "loha" or "lokr"


def split_key(key: str) -> tuple[str, str]:
    """`lora_unet_x.lora_down.weight` → ("lora_unet_x", ".lora_down.weight")."""
    name, dot, rest = key.partition(".")
    return name, dot + rest


def group_by_module(
    state: Mapping[str, torch.Tensor], module_of: Callable[[str, str], str | None]
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """The tensors of `state` by module and suffix, and the keys no module takes:
    `module_of(name, suffix)` names the module a key belongs to (None: not this network's)."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    unexpected = []
    for key, value in state.items():
        name, suffix = split_key(key)
        module = module_of(name, suffix)
        if module is None:
            unexpected.append(key)
        else:
            grouped.setdefault(module, {})[suffix] = value
    return grouped, unexpected


def refuse_unmatched(what: str, unexpected: list[str], missing: list[str], fix: str) -> None:
    """One line when a file's modules and a network's differ (strict loading)."""
    if unexpected or missing:
        raise LorakitError(
            f"{what}: {len(unexpected)} unexpected and {len(missing)} missing modules "
            f"(e.g. {(unexpected or missing)[0]}); {fix}"
        )


def load_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a LoRA file; a one-line LorakitError for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise LorakitError(f"{path}: no such LoRA file; check the path")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return _load_pickle(path), {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise LorakitError(
            f"{path}: not a readable safetensors file ({exc}); re-download or re-save it"
        ) from None
    if not state:
        raise LorakitError(f"{path}: holds no tensors; it is not a LoRA")
    return state, metadata


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise LorakitError(
            f"{path}: cannot be read safely ({type(exc).__name__}); convert it to .safetensors"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LorakitError(f"{path}: not a LoRA state dict; use a kohya-format LoRA file")
    return state


def module_dims(state: Mapping[str, torch.Tensor], source: str = "LoRA") -> dict[str, ModuleDims]:
    """Per-module type, rank and alpha of kohya weights (LoRA, DoRA, LoHa, LoKr).

    `is_conv` comes from the kernel a LoRA `lora_down` (or a full LoKr `w2`) keeps; LoHa
    and factorised LoKr flatten it away, so theirs is only known with the base's layer.
    """
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        name, suffix = split_key(key)
        grouped.setdefault(name, {})[suffix] = value
    dims = {}
    for name, tensors in grouped.items():
        try:
            kind = module_kind(tensors)
        except LorakitError as exc:
            raise LorakitError(f"{source}: {name}: {exc}") from None
        if kind is None:
            continue
        alpha = module_alpha(kind, tensors)
        rank = module_rank(kind, tensors) or max(int(alpha), 1)
        kernel = tensors.get(".lora_down.weight", tensors.get(".lokr_w2"))
        is_conv = kernel is not None and kernel.dim() == 4 and tuple(kernel.shape[2:]) != (1, 1)
        dims[name] = ModuleDims(rank, alpha, is_conv, kind)
    if not dims:
        raise LorakitError(f"{source}: no `.lora_down.weight` keys; not a kohya-format LoRA")
    return dims


def safetensors_hashes(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> tuple[str, str]:
    """sd-scripts' (sshs_model_hash, sshs_legacy_hash) of a file with these tensors.

    As sd-scripts computes them: serialise with only the `ss_*` metadata; the model hash is
    the sha256 of everything after the header, the legacy hash the first 8 hex of the
    sha256 of the 0x10000 bytes at offset 0x100000 of that serialisation.
    """
    ss_only = {key: value for key, value in metadata.items() if key.startswith("ss_")}
    data = safetensors_bytes(dict(state), ss_only)
    header_size = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_size :]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_lora_file(
    path: str | Path, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Path:
    """Write tensors + metadata (+ sshs hashes) atomically; all metadata values are strings."""
    path = Path(path)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state.items()}
    meta = {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in metadata.items()
    }
    model_hash, legacy_hash = safetensors_hashes(tensors, meta)
    meta["sshs_model_hash"] = model_hash
    meta["sshs_legacy_hash"] = legacy_hash
    atomic_write_bytes(path, safetensors_bytes(tensors, meta))
    return path


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """ "fp16"/"bf16"/"fp32" (or a torch dtype) → torch dtype; LorakitError otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if name not in SAVE_DTYPES:
        raise LorakitError(f"save precision {name!r} unknown; use one of {', '.join(SAVE_DTYPES)}")
    return SAVE_DTYPES[name]
