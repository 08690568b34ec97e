"""Thumbnails, made once per image version and kept on disk.

The cache key is the image's real path, size and modification time, so an edited photo
gets a new thumbnail and an unchanged one is never decoded again. Photos go through the
dataset stage's safe opener (bombs and non-images refused); an image that cannot be read
gets no thumbnail and the page shows its lint finding instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from lorakit.dataset.images import load_rgb
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_path

SIDE = 192


def thumb_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{SIDE}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def thumbnail(path: Path, cache: Path) -> Path | None:
    """The cached JPEG thumbnail of `path`, made now if missing; None when unreadable."""
    try:
        target = cache / f"{thumb_key(path)}.jpg"
    except OSError:
        return None
    if target.is_file():
        return target
    try:
        image = load_rgb(path)
    except LorakitError:
        return None
    image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    with atomic_path(target) as tmp:
        image.save(tmp, format="JPEG", quality=85)
    return target
