"""What is inside a LoRA file: family, network types, rank/alpha per module group, size,
training metadata. LoHa and factorised LoKr files flatten a conv's kernel away, so their
conv modules are told by the family's layer of that name."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.models import ModelFamily
from lorakit.network.convert import diffusers_to_kohya
from lorakit.network.detect import detect_lora_family, is_kohya_format
from lorakit.network.files import ModuleDims, load_lora_file, module_dims
from lorakit.network.flux import is_flux_lora
from lorakit.network.flux_files import flux_group, flux_kohya_state
from lorakit.network.keymap import family_accepted_names
from lorakit.network.kinds import LABELS

_UNET_GROUPS = (
    (("down_blocks", "input_blocks"), "unet down"),
    (("mid_block", "middle_block"), "unet mid"),
    (("up_blocks", "output_blocks"), "unet up"),
)
_TEXT_GROUPS = {
    "lora_te_": "text encoder",
    "lora_te1_": "text encoder 1",
    "lora_te2_": "text encoder 2",
}


@dataclass
class GroupSummary:
    group: str
    modules: int
    ranks: list[int]
    alphas: list[float]
    types: list[str] = field(default_factory=list)  # LoRA, DoRA, LoHa, LoKr


@dataclass
class LoRASummary:
    path: str
    family: str | None
    format: str
    size_bytes: int
    dtypes: list[str]
    modules: int
    groups: list[GroupSummary]
    metadata: dict[str, str]
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    types: dict[str, int] = field(default_factory=dict)  # modules per network type

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)


def module_group(name: str, is_conv: bool = False) -> str:
    """A readable group of a kohya module name ("unet down", "text encoder 2", ...)."""
    for prefix, group in _TEXT_GROUPS.items():
        if name.startswith(prefix):
            return group
    body = name.removeprefix("lora_unet_")
    group = next((g for markers, g in _UNET_GROUPS if body.startswith(markers)), "unet other")
    return f"{group} (conv)" if is_conv else group


def _tag_frequency(metadata: dict[str, str]) -> dict[str, Any]:
    raw = metadata.get("ss_tag_frequency")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def inspect_lora(path: str | Path) -> LoRASummary:
    """Summarise a kohya- or diffusers-format LoRA file (SD1.5, SDXL or FLUX.1)."""
    path = Path(path)
    state, metadata = load_lora_file(path)
    kohya = is_kohya_format(state)
    if is_flux_lora(state, metadata):
        state = flux_kohya_state(state, metadata, str(path))
        dims = module_dims(state, str(path))
        groups = {name: flux_group(name) for name in dims}
        return _summary(path, FLUX1, kohya, state, metadata, dims, groups)
    try:
        family = detect_lora_family(state, metadata, str(path))
    except LorakitError:
        family = None
    if not kohya:
        if family is None:
            raise LorakitError(
                f"{path}: diffusers-format LoRA of unknown family; convert with --family"
            )
        state = diffusers_to_kohya(state, family, metadata, str(path))
    dims = module_dims(state, str(path))
    convs = _conv_names(dims, family)
    groups = {name: module_group(name, d.is_conv or name in convs) for name, d in dims.items()}
    return _summary(path, family.value if family else None, kohya, state, metadata, dims, groups)


def _summary(
    path: Path,
    family: str | None,
    kohya: bool,
    state: dict[str, torch.Tensor],
    metadata: dict[str, str],
    dims: dict[str, ModuleDims],
    group_of: dict[str, str],
) -> LoRASummary:
    """The summary of kohya-named `state`, its modules counted by the group `group_of` names."""
    grouped: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
    for name, d in dims.items():
        grouped[group_of[name]].append((d.rank, d.alpha, LABELS[d.kind]))
    groups = [
        GroupSummary(
            g,
            len(v),
            sorted({r for r, _, _ in v}),
            sorted({a for _, a, _ in v}),
            sorted({t for _, _, t in v}),
        )
        for g, v in sorted(grouped.items())
    ]
    return LoRASummary(
        path=str(path),
        family=family,
        format="kohya" if kohya else "diffusers",
        size_bytes=path.stat().st_size,
        dtypes=sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
        modules=len(dims),
        groups=groups,
        metadata=metadata,
        tag_frequency=_tag_frequency(metadata),
        types=dict(Counter(LABELS[d.kind] for d in dims.values())),
    )


def _conv_names(dims: dict[str, ModuleDims], family: ModelFamily | None) -> set[str]:
    """The k×k conv modules among LoHa/LoKr ones, by the family's layer of that name."""
    if family is None or all(d.kind in ("lora", "dora") for d in dims.values()):
        return set()
    sites = family_accepted_names(family)
    return {name for name in dims if name in sites and sites[name].kind == "conv"}
