"""Reading single-file checkpoints safely, and the hashes other tools show for them.

`.safetensors` is read with safetensors (no code runs); `.ckpt`/`.pt`/`.pth` only with
`torch.load(weights_only=True)`, so a pickle that wants to run code is refused rather than
executed. Every way a file can be wrong ends in a one-line LorakitError naming it.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path

import torch

from lorakit.errors import LorakitError
from lorakit.progress import task

SAFETENSORS_EXTS = {".safetensors"}
PICKLE_EXTS = {".ckpt", ".pt", ".pth"}
CHECKPOINT_EXTS = SAFETENSORS_EXTS | PICKLE_EXTS

_HASH_CHUNK = 1 << 20
_LEGACY_OFFSET, _LEGACY_SIZE = 0x100000, 0x10000


def check_checkpoint_path(path: Path) -> None:
    """Refuse a missing file or an extension lorakit cannot read, before opening it."""
    if not path.exists():
        raise LorakitError(f"{path}: no such file or folder; check the base model path")
    if path.suffix.lower() not in CHECKPOINT_EXTS:
        allowed = ", ".join(sorted(CHECKPOINT_EXTS))
        raise LorakitError(
            f"{path}: not a checkpoint ({path.suffix or 'no extension'}); "
            f"give a diffusers folder or a {allowed} file"
        )


def safetensors_error(path: Path, exc: Exception) -> LorakitError:
    """The one-line error for a .safetensors file that safetensors cannot open."""
    return LorakitError(
        f"{path}: not a readable safetensors file ({brief(exc)}); the file is truncated, corrupt "
        "or not a checkpoint: download it again"
    )


def brief(exc: Exception) -> str:
    """The first line of an exception message, short enough for a one-line error."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[0][:120]


def torch_load(path: Path, **options: object) -> dict[str, torch.Tensor]:
    """The tensors of a `.ckpt`'s state dict, through `torch.load(weights_only=True)`.

    `options` go to torch.load; `map_location="meta"` reads no tensor data (names, shapes
    and file offsets only: `lorakit.models.tensors` reads the data itself).
    """
    # Every torch.save since 1.6 writes a zip; anything else is damaged or not a checkpoint,
    # and must not reach the unpickler (whose complaint would blame code execution).
    if not zipfile.is_zipfile(path):
        raise LorakitError(
            f"{path}: not a PyTorch checkpoint (no zip archive inside); the file is truncated, "
            "corrupt or not a checkpoint: download it again"
        )
    try:
        data = torch.load(path, weights_only=True, **{"map_location": "cpu", **options})
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" (it imports {found.group(1)})" if found else ""
        raise LorakitError(
            f"{path}: this .ckpt needs pickle code execution to load{what}, which lorakit "
            "refuses; convert it to .safetensors with a tool you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise LorakitError(
            f"{path}: not a readable PyTorch checkpoint ({brief(exc)}); the file is truncated, "
            "corrupt or not a checkpoint: download it again"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise LorakitError(f"{path}: holds no state dict; give an SD1.5 or SDXL checkpoint")
    return {key: value for key, value in data.items() if isinstance(value, torch.Tensor)}


def file_hashes(path: str | Path) -> dict[str, str]:
    """sha256 of the whole file, A1111's "autov2" short hash (its first 10 hex digits) and
    the legacy A1111/sd-scripts model hash (`ss_sd_model_hash`: the first 8 hex digits of
    the sha256 of the 64 KiB at offset 1 MiB).

    A1111 shows autov2 as "Model hash" and Civitai indexes by it, so LoRA metadata that
    carries it links back to the exact base checkpoint. Computed fresh on every call.
    """
    path = Path(path)
    if not path.is_file():
        raise LorakitError(f"{path}: not a file; hashes are computed for checkpoint files")
    digest = hashlib.sha256()
    size = path.stat().st_size / _HASH_CHUNK
    with task(f"hashing {path.name}", total=size, unit="MiB") as advance, path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            advance(len(chunk) / _HASH_CHUNK)
    sha256 = digest.hexdigest()
    with path.open("rb") as handle:
        handle.seek(_LEGACY_OFFSET)
        legacy = hashlib.sha256(handle.read(_LEGACY_SIZE)).hexdigest()[:8]
    return {"sha256": sha256, "autov2": sha256[:10], "legacy": legacy}
