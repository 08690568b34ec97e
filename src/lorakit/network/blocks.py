"""A1111's per-part LoRA multipliers and the LoRA Block Weight extension's block vectors.

`<lora:name:0.8>` applies 0.8 to every module; A1111 also takes a text-encoder and a UNet
multiplier (`<lora:name:TE:UNET>`, `te=`, `unet=`), and the LoRA Block Weight extension
(hako-mikan/sd-webui-lora-block-weight) a multiplier per UNet block: `lbw=` a preset name
or 12 (SDXL), 17 (SD1.5), 20 or 26 values. This module reproduces how that extension reads
them: a vector is spread over its 26 blocks `BASE, IN00…IN11, M00, OUT00…OUT11` with the
blocks it does not name set to 0 (its `to26`); a module's block comes from its LDM name
(`input_blocks.4…` → IN04, `middle_block` → M00, `output_blocks.N` → OUTNN), every text
encoder module is BASE, and a module in no block (time embedding, `out.2`) keeps 1. The
effective multiplier of a module is te (text encoders) or unet (UNet) times its block's value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lorakit.errors import LorakitError
from lorakit.network.naming import UNET_PART, Site, ldm_block_map, to_ldm_path

if TYPE_CHECKING:
    from lorakit.network.lora import LoRANetwork


def _ids(prefix: str, indices: Iterable[int]) -> tuple[str, ...]:
    return tuple(f"{prefix}{index:02d}" for index in indices)


BLOCKS_26 = ("BASE", *_ids("IN", range(12)), "M00", *_ids("OUT", range(12)))
# The extension's vector layouts, by length (its BLOCKID17, BLOCKID12, BLOCKID20, BLOCKID26).
VECTOR_BLOCKS: dict[int, tuple[str, ...]] = {
    17: ("BASE", *_ids("IN", (1, 2, 4, 5, 7, 8)), "M00", *_ids("OUT", range(3, 12))),
    12: ("BASE", *_ids("IN", (4, 5, 7, 8)), "M00", *_ids("OUT", range(6))),
    20: ("BASE", *_ids("IN", range(9)), "M00", *_ids("OUT", range(9))),
    26: BLOCKS_26,
}
# The extension's built-in presets (DEF_WEIGHT_PRESET), 17 values each.
PRESETS: dict[str, str] = {
    "NONE": "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "ALL": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
    "INS": "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
    "IND": "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "INALL": "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
    "MIDD": "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
    "OUTD": "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
    "OUTS": "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
    "OUTALL": "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
    "ALL0.5": ",".join(["0.5"] * 17),
}
_LDM_BLOCK = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.|^middle_block\.")


def is_block_weights(text: str) -> bool:
    """Whether a tag field is a block vector or preset (the extension's own test)."""
    return text.strip() in PRESETS or text.count(",") + 1 in VECTOR_BLOCKS


def parse_block_weights(text: str, where: str) -> tuple[float, ...]:
    """26 block multipliers from a preset name or a 12/17/20/26-value vector."""
    text = text.strip()
    values = [part.strip() for part in PRESETS.get(text, text).split(",")]
    if len(values) == 1:
        raise LorakitError(
            f"lbw={text} in {where}: unknown block-weight preset; use one of "
            f"{', '.join(PRESETS)} or 12 (SDXL) / 17 (SD1.5) comma-separated values"
        )
    if len(values) not in VECTOR_BLOCKS:
        raise LorakitError(
            f"lbw= in {where} has {len(values)} values; give 12 (SDXL), 17 (SD1.5), 20 or 26"
        )
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        raise LorakitError(
            f"lbw= in {where}: {text!r} holds a value that is not a number (lorakit does not "
            "take the extension's R/U/X placeholders); write numbers like 0.5"
        ) from None
    spread = dict.fromkeys(BLOCKS_26, 0.0)
    spread.update(zip(VECTOR_BLOCKS[len(numbers)], numbers, strict=True))
    return tuple(spread[block] for block in BLOCKS_26)


def block_of(site: Site, block_map: Mapping[str, str]) -> str | None:
    """The extension's block of a LoRA module: BASE, INnn, M00, OUTnn, or None (no block)."""
    if site.part != UNET_PART:
        return "BASE"
    match = _LDM_BLOCK.match(to_ldm_path(site.path, block_map) + ".")
    if match is None:
        return None
    if match.group(1) is None:
        return "M00"
    side = "IN" if match.group(1) == "input_blocks" else "OUT"
    return f"{side}{int(match.group(2)):02d}"


def apply_multipliers(
    network: LoRANetwork,
    unet_config: Mapping[str, Any],
    te: float,
    unet: float,
    blocks: Sequence[float] | None = None,
) -> None:
    """Set every module's multiplier: te or unet, times its block's value when given."""
    block_map = ldm_block_map(unet_config)
    for module, site in zip(network.loras, network.sites, strict=True):
        multiplier = unet if site.part == UNET_PART else te
        block = block_of(site, block_map) if blocks is not None else None
        if blocks is not None and block is not None:
            multiplier *= blocks[BLOCKS_26.index(block)]
        module.multiplier = multiplier
