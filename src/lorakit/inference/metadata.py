"""A1111 "parameters" infotext: written into every PNG lorakit makes, and read back.

The format is the one A1111, CivitAI and most viewers understand: the prompt (LoRA tags
kept), a `Negative prompt:` line, then one `Key: value, Key: value` line. Writing it means a
lorakit image dropped into A1111's PNG Info reproduces the same settings; reading it means
`lorakit png-info` works on images from A1111 too.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo
from safetensors import SafetensorError, safe_open

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_path

PARAMETERS_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
# A1111's own pattern for one `Key: value` pair, with JSON-quoted values.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


@dataclass
class GenerationInfo:
    """Everything needed to reproduce one image, in A1111's vocabulary."""

    prompt: str
    negative: str = ""
    steps: int = 20
    sampler: str = "Euler a"
    cfg: float = 7.0
    seed: int = 0
    width: int = 512
    height: int = 512
    model_hash: str | None = None
    model: str | None = None
    denoising_strength: float | None = None
    lora_hashes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def _quote(value: str) -> str:
    """A1111 quotes a value only when it holds a separator."""
    if any(ch in value for ch in ",:\n"):
        return json.dumps(value, ensure_ascii=False)
    return value


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value
    return value


def lora_alias(name: str) -> str:
    """A LoRA name as A1111 writes it under `Lora hashes`: without `:` and `,`."""
    return name.replace(":", "").replace(",", "")


# Extra keys A1111/Forge write right after a core one (Forge's FLUX line: `Sampler: Euler,
# Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, …`); other extras go last.
_PLACED = ("Schedule type", "Distilled CFG Scale")


def _param_pairs(info: GenerationInfo) -> list[tuple[str, str | None]]:
    loras = ", ".join(f"{lora_alias(name)}: {h}" for name, h in info.lora_hashes.items())
    strength = info.denoising_strength
    return [
        ("Steps", str(info.steps)),
        ("Sampler", info.sampler),
        ("Schedule type", info.extra.get("Schedule type")),
        ("CFG scale", f"{info.cfg:g}"),
        ("Distilled CFG Scale", info.extra.get("Distilled CFG Scale")),
        ("Seed", str(info.seed)),
        ("Size", f"{info.width}x{info.height}"),
        ("Model hash", info.model_hash),
        ("Model", info.model),
        ("Denoising strength", None if strength is None else f"{strength:g}"),
        ("Lora hashes", loras or None),
        *((key, value) for key, value in info.extra.items() if key not in _PLACED),
    ]


def format_parameters(info: GenerationInfo) -> str:
    """The infotext for `info`, exactly as A1111 lays it out."""
    pairs = ", ".join(f"{key}: {_quote(value)}" for key, value in _param_pairs(info) if value)
    lines = [info.prompt]
    if info.negative:
        lines.append(f"{NEGATIVE_PREFIX} {info.negative}")
    lines.append(pairs)
    return "\n".join(lines)


def _split_lora_hashes(value: str) -> dict[str, str]:
    pairs = (item.rpartition(":") for item in value.split(","))
    return {name.strip(): digest.strip() for name, sep, digest in pairs if sep}


def _apply_pair(info: GenerationInfo, key: str, value: str) -> None:
    size = _SIZE.match(value)
    setters = {
        "Steps": lambda: setattr(info, "steps", int(value)),
        "Sampler": lambda: setattr(info, "sampler", value),
        "CFG scale": lambda: setattr(info, "cfg", float(value)),
        "Seed": lambda: setattr(info, "seed", int(value)),
        "Model hash": lambda: setattr(info, "model_hash", value),
        "Model": lambda: setattr(info, "model", value),
        "Denoising strength": lambda: setattr(info, "denoising_strength", float(value)),
        "Lora hashes": lambda: setattr(info, "lora_hashes", _split_lora_hashes(value)),
    }
    if key == "Size" and size:
        info.width, info.height = int(size.group(1)), int(size.group(2))
    elif key in setters:
        setters[key]()
    else:
        info.extra[key] = value


def _merge_schedule_type(info: GenerationInfo) -> None:
    """A1111 ≥ 1.9 writes `Sampler: DPM++ 2M, Schedule type: Karras`; older ones and lorakit
    write `Sampler: DPM++ 2M Karras`. Fold the two back into the one name lorakit accepts."""
    schedule = info.extra.get("Schedule type")
    if schedule == "Automatic":
        del info.extra["Schedule type"]
    elif schedule == "Karras" and not info.sampler.endswith(" Karras"):
        info.sampler = f"{info.sampler} Karras"
        del info.extra["Schedule type"]


def parse_parameters(text: str, source: str = "the image") -> GenerationInfo:
    """Parse an A1111 infotext (lorakit's or A1111's own) into a `GenerationInfo`."""
    lines = text.strip().split("\n")
    pairs = _PARAM.findall(lines[-1])
    if len(pairs) < 3:
        raise LorakitError(f"{source} has no A1111 settings line (Steps: …, Sampler: …)")
    info = GenerationInfo(prompt="")
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in (raw.strip() for raw in lines[:-1]):
        if line.startswith(NEGATIVE_PREFIX) or negative_lines:
            negative_lines.append(line.removeprefix(NEGATIVE_PREFIX).strip())
        else:
            prompt_lines.append(line)
    info.prompt = "\n".join(prompt_lines).strip()
    info.negative = "\n".join(negative_lines).strip()
    try:
        for key, value in pairs:
            _apply_pair(info, key.strip(), _unquote(value))
    except ValueError as exc:
        raise LorakitError(f"{source} has a malformed settings line: {exc}") from None
    _merge_schedule_type(info)
    return info


def save_png(image: Image.Image, path: Path, info: GenerationInfo) -> Path:
    """Write `image` to `path` atomically with `info` as its `parameters` text chunk."""
    png_info = PngInfo()
    png_info.add_text(PARAMETERS_KEY, format_parameters(info))
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=png_info)
    return path


def read_parameters(path: Path) -> str:
    """The raw `parameters` text of an image; a one-line error when it has none."""
    try:
        with Image.open(path) as image:
            text = image.info.get(PARAMETERS_KEY)
    except (OSError, ValueError) as exc:
        raise LorakitError(f"cannot read image {path}: {exc}") from None
    if not text:
        raise LorakitError(
            f"{path} has no 'parameters' text chunk; pass a PNG made by lorakit or A1111"
        )
    return str(text)


def lora_short_hash(path: Path) -> str:
    """A1111's LoRA short hash (12 hex), as it writes under `Lora hashes`.

    A1111 takes sd-scripts' `sshs_model_hash` from the file's metadata when present, else
    the "addnet" hash (sha256 of the tensor data after the header); matching it lets
    CivitAI and A1111 link lorakit's images to the same files.
    """
    if path.suffix.lower() != ".safetensors":
        # A1111 hashes other formats (.pt/.ckpt LoRAs) whole. Imported here: the models
        # package loads diffusers, which `png-info` should not wait for.
        from lorakit.models.checkpoint import file_hashes

        return file_hashes(path)["sha256"][:12]
    try:
        with safe_open(path, framework="pt") as handle:
            stored = (handle.metadata() or {}).get("sshs_model_hash")
    except (SafetensorError, OSError) as exc:
        raise LorakitError(
            f"{path}: not a readable safetensors file ({exc}); re-download or re-save it"
        ) from None
    if stored:
        return stored[:12]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + header_len)
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]
