"""What is inside a LoRA file: family, rank/alpha per module group, size, training metadata."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.network.convert import diffusers_to_kohya
from lorakit.network.detect import detect_lora_family, is_kohya_format
from lorakit.network.files import load_lora_file, module_dims

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
    """Summarise a kohya- or diffusers-format LoRA file."""
    path = Path(path)
    state, metadata = load_lora_file(path)
    kohya = is_kohya_format(state)
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
    grouped: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for name, d in dims.items():
        grouped[module_group(name, d.is_conv)].append((d.rank, d.alpha))
    groups = [
        GroupSummary(g, len(v), sorted({r for r, _ in v}), sorted({a for _, a in v}))
        for g, v in sorted(grouped.items())
    ]
    return LoRASummary(
        path=str(path),
        family=family.value if family else None,
        format="kohya" if kohya else "diffusers",
        size_bytes=path.stat().st_size,
        dtypes=sorted({str(t.dtype).removeprefix("torch.") for t in state.values()}),
        modules=len(dims),
        groups=groups,
        metadata=metadata,
        tag_frequency=_tag_frequency(metadata),
    )
