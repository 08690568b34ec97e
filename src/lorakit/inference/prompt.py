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

LORA_EXTS = (".safetensors",)
# <lora:name>, <lora:name:0.8>; A1111 extensions add more fields after further colons.
_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraRef:
    """One LoRA file applied at `weight` (the network multiplier)."""

    name: str
    path: Path
    weight: float = 1.0


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


def parse_prompt(prompt: str, lora_dir: Path | None = None) -> ParsedPrompt:
    """Split `<lora:name:weight>` tags out of `prompt`, resolving names in `lora_dir`."""
    available = find_loras(lora_dir)
    loras = [
        LoraRef(
            name=match.group(1).strip(),
            path=_resolve(match.group(1), available, lora_dir),
            weight=parse_weight(match.group(2), f"tag {match.group(0)}"),
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
    return f"<lora:{ref.name}:{ref.weight:g}>"
