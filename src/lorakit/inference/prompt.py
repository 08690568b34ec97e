"""The A1111 prompt syntax for LoRAs: `<lora:name:weight>` tags inside the prompt text.

Guides and shared infotexts carry LoRAs this way, so a prompt pasted from A1111 works
unchanged: each tag is resolved to a file in a LoRA folder by its stem (case-insensitive,
as A1111 does), removed from the text the text encoder sees, and kept in the PNG metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lorakit.errors import LorakitError
from lorakit.network.blocks import is_block_weights, parse_block_weights

LORA_EXTS = (".safetensors",)
# <lora:name>, <lora:name:0.8>, <lora:name:TE:UNET>, <lora:name:0.8:lbw=OUTALL>, ...
_TAG = re.compile(r"<lora:([^:>]+)((?::[^>]*)?)>", re.IGNORECASE)
_NAMED_FIELDS = ("te", "unet", "lbw", "w")  # `w=` is the Block Weight extension's lbw=


@dataclass(frozen=True)
class LoraRef:
    """One LoRA file applied at `weight` (the network multiplier).

    As in A1111, `weight` is the text encoders' multiplier and the UNet's unless `unet`
    is given; `blocks` is the LoRA Block Weight extension's `lbw=` (a preset or a vector,
    as written), which scales each UNet block (`lorakit.network.blocks`).
    """

    name: str
    path: Path
    weight: float = 1.0
    unet: float | None = None
    blocks: str | None = None

    @property
    def unet_weight(self) -> float:
        return self.weight if self.unet is None else self.unet

    @property
    def block_weights(self) -> tuple[float, ...] | None:
        """The 26 block multipliers of `blocks` (None without lbw=)."""
        if self.blocks is None:
            return None
        return parse_block_weights(self.blocks, f"the tag {lora_tag(self)}")


@dataclass(frozen=True)
class ParsedPrompt:
    """The prompt as the text encoder sees it, and the LoRAs its tags asked for."""

    text: str
    loras: list[LoraRef]


def find_loras(lora_dir: Path | None) -> dict[str, Path]:
    """LoRA files under `lora_dir` (recursively, like A1111's Lora folder) by lower-case stem."""
    if lora_dir is None or not Path(lora_dir).is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(Path(lora_dir).rglob("*")):
        if path.suffix.lower() in LORA_EXTS and path.is_file():
            found.setdefault(path.stem.lower(), path)
    return found


def parse_weight(text: str | None, where: str) -> float:
    """A LoRA weight from a tag or a `FILE:weight` argument; empty means 1.0."""
    if text is None or not text.strip():
        return 1.0
    try:
        return float(text)
    except ValueError:
        raise LorakitError(
            f"LoRA weight {text!r} in {where} is not a number; write it like 0.8"
        ) from None


def _resolve(name: str, available: dict[str, Path], lora_dir: Path | None) -> Path:
    path = available.get(name.strip().lower())
    if path is not None:
        return path
    names = ", ".join(p.stem for p in available.values()) or "none"
    folder = lora_dir if lora_dir is not None else "(no --lora-dir given)"
    raise LorakitError(
        f"LoRA {name!r} not found in {folder}; LoRAs found: {names}; "
        "fix the name in the <lora:name:weight> tag or pass --lora-dir"
    )


def clean_prompt(text: str) -> str:
    """Tidy the commas and spaces a removed tag leaves behind."""
    parts = [part.strip() for part in re.sub(r"\s+", " ", text).split(",")]
    return ", ".join(part for part in parts if part)


def _tag_fields(fields: list[str], where: str) -> dict[str, float | str | None]:
    """A1111's `:TE:UNET` (or `te=`, `unet=`) and the Block Weight extension's `lbw=`.

    As that extension does, a third field that is a preset or a vector is `lbw`, not the
    UNet multiplier. A1111's fourth field (`dyn`, a rank cut) and the extension's start/stop
    and element options are refused: lorakit would silently do something else.
    """
    named: dict[str, str] = {}
    positional: list[str] = []
    for field in fields:
        key, equals, value = field.partition("=")
        if equals:
            named[key.strip().lower()] = value
        else:
            positional.append(field)
    unknown = [key for key in named if key not in _NAMED_FIELDS] + positional[2:3]
    if unknown:
        raise LorakitError(
            f"{unknown[0]!r} in {where} is not supported; lorakit reads <lora:name:TE:UNET> "
            "with te=, unet= and lbw= (block weights)"
        )
    te, unet = [*positional, None, None][:2]
    blocks = named.get("lbw", named.get("w"))
    if unet is not None and blocks is None and is_block_weights(unet):
        blocks, unet = unet, None
    unet = named.get("unet", unet)
    if blocks is not None:
        parse_block_weights(blocks, where)
    return {
        "weight": parse_weight(named.get("te", te), where),
        "unet": None if unet is None else parse_weight(unet, where),
        "blocks": None if blocks is None else blocks.strip(),
    }


def parse_prompt(prompt: str, lora_dir: Path | None = None) -> ParsedPrompt:
    """Split `<lora:name:weight>` tags out of `prompt`, resolving names in `lora_dir`."""
    available = find_loras(lora_dir)
    loras = [
        LoraRef(
            name=match.group(1).strip(),
            path=_resolve(match.group(1), available, lora_dir),
            **_tag_fields(match.group(2).split(":")[1:], f"tag {match.group(0)}"),
        )
        for match in _TAG.finditer(prompt)
    ]
    text = clean_prompt(_TAG.sub(",", prompt)) if loras else prompt.strip()
    return ParsedPrompt(text=text, loras=loras)


def parse_lora_arg(arg: str) -> LoraRef:
    """A `--lora FILE[:weight]` argument; the file must exist."""
    path_text, weight_text = arg, None
    head, sep, tail = arg.rpartition(":")
    if sep and head and not Path(arg).exists():
        path_text, weight_text = head, tail
    path = Path(path_text)
    if not path.is_file():
        raise LorakitError(f"LoRA file {path} does not exist; pass --lora FILE.safetensors:0.8")
    return LoraRef(name=path.stem, path=path, weight=parse_weight(weight_text, f"--lora {arg}"))


def lora_tag(ref: LoraRef) -> str:
    """The A1111 tag for `ref`, so an infotext pasted into A1111 applies the same LoRA."""
    unet = "" if ref.unet is None else f":unet={ref.unet:g}"
    blocks = "" if ref.blocks is None else f":lbw={ref.blocks}"
    return f"<lora:{ref.name}:{ref.weight:g}{unet}{blocks}>"
