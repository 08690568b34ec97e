"""Latents and text-encoder outputs computed once instead of every step.

How the augmentations combine with cached latents:
- `flip_aug`: both orientations are encoded and cached; each step picks the one its
  `SampleKey` drew, so flipping costs one extra VAE pass per image, not one per step.
- `color_aug`: the jitter changes pixels every step, so latents cannot be cached; the
  VAE encodes each batch live (`cache_latents` is ignored, and the plan says so).
- Text-encoder outputs are cached only while no text encoder is trained and captions are
  fixed strings (`shuffle_caption` off); caption dropout just adds the empty caption.

Disk caches live in `<output_dir>/cache/`: latents keyed by image path, size, mtime,
bucket, flip and VAE identity, text-encoder outputs (`cache/text/`) by caption and the
encoders' identity (`file_identity` of their files, their dtype, clip skip or T5 length),
so a changed image, caption or model never reuses a stale entry. Entries are written
atomically as safetensors files and survive `--overwrite` (rundir leaves `cache/`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lorakit.fileio import atomic_path
from lorakit.models import BaseModel
from lorakit.progress import task
from lorakit.training.data import Items, TrainItem, load_pixels
from lorakit.training.text import encode

LatentKey = tuple[int, bool]
TEXT_BATCH = 8


@torch.no_grad()
def encode_latents(base: BaseModel, pixels: torch.Tensor) -> torch.Tensor:
    """VAE latents scaled for the U-Net; the distribution's mean keeps caching deterministic."""
    vae = base.vae
    dist = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist
    latents = dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((latents - shift) * vae.config.scaling_factor).float()


def _disk_name(item: TrainItem, flip: bool, vae_id: str) -> str:
    stat = item.path.stat()
    raw = f"{item.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{item.bucket}|{flip}|{vae_id}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32] + ".safetensors"


class LatentCache:
    """Latents per (item index, flipped): in memory, in safetensors files, or ("none")
    encoded live on every request (the only way colour augmentation can work)."""

    def __init__(self, base: BaseModel, items: Sequence[TrainItem], mode: str, folder: Path):
        self.base, self.items, self.mode, self.folder = base, items, mode, folder
        self.memory: dict[LatentKey, torch.Tensor] = {}
        self.vae_id = f"{base.source}|{base.vae.config.scaling_factor}"

    def _path(self, key: LatentKey) -> Path:
        return self.folder / _disk_name(self.items[key[0]], key[1], self.vae_id)

    def _encode(self, key: LatentKey, color_seed: int | None = None) -> torch.Tensor:
        pixels = load_pixels(self.items[key[0]], key[1], color_seed).unsqueeze(0)
        return encode_latents(self.base, pixels)[0]

    def fill(self, keys: Iterable[LatentKey]) -> None:
        """Encode every key not cached yet (with progress: a full-size VAE on a CPU takes
        seconds per image)."""
        if self.mode == "none":
            return
        todo = [k for k in dict.fromkeys(keys) if not self._has(k)]
        if not todo:
            return
        with task("caching latents", total=len(todo)) as advance:
            for key in todo:
                self._put(key, self._encode(key).cpu())
                advance()

    def _has(self, key: LatentKey) -> bool:
        return key in self.memory if self.mode == "memory" else self._path(key).is_file()

    def _put(self, key: LatentKey, latent: torch.Tensor) -> None:
        if self.mode == "memory":
            self.memory[key] = latent
            return
        with atomic_path(self._path(key)) as tmp:
            save_file({"latent": latent.contiguous()}, str(tmp))

    def get(self, key: LatentKey, color_seed: int | None = None) -> torch.Tensor:
        if self.mode == "none":
            return self._encode(key, color_seed)
        if self.mode == "memory":
            return self.memory[key]
        return load_file(str(self._path(key)))["latent"]


def file_identity(path: Path, subfolders: Sequence[str] = ()) -> str:
    """A model file's resolved path, size and mtime (for a diffusers folder: those of every
    file in `subfolders`): cheap to take where hashing a 9.5 GB T5-XXL file is not, and
    changed by any replacement of the file."""
    path = Path(path).expanduser().resolve()
    if path.is_dir():
        files = sorted(f for sub in subfolders for f in (path / sub).rglob("*") if f.is_file())
    else:
        files = [path]
    return ";".join(f"{f}|{f.stat().st_size}|{f.stat().st_mtime_ns}" for f in files)


TextRow = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class TextDisk:
    """Where a `TextCache` keeps its files, what makes its encoders' outputs (`identity`,
    hashed into each name with the caption) and the device it reads them back to."""

    folder: Path
    identity: str
    device: torch.device


class TextCache:
    """Encoder outputs per caption string, computed lazily without gradients: in memory,
    or with `disk` in one safetensors file per caption (`hidden`, and `pooled` where the
    model has one), read back on every request as `LatentCache` reads its files."""

    def __init__(self, encode_fn: Callable[[list[str]], TextRow], disk: TextDisk | None = None):
        self.encode_fn, self.disk = encode_fn, disk
        self.store: dict[str, TextRow] = {}

    def _path(self, caption: str) -> Path:
        """The file of `caption` in the disk cache."""
        assert self.disk is not None
        raw = f"{caption}\0{self.disk.identity}"
        return self.disk.folder / (hashlib.sha256(raw.encode()).hexdigest()[:32] + ".safetensors")

    def _missing(self, captions: Iterable[str]) -> list[str]:
        unique = dict.fromkeys(captions)
        if self.disk is None:
            return [c for c in unique if c not in self.store]
        return [c for c in unique if not self._path(c).is_file()]

    @torch.no_grad()
    def fill(self, captions: Iterable[str]) -> None:
        """Encode every caption not cached yet up front, with progress, in batches of
        `TEXT_BATCH` (nothing is encoded, so no encoder runs, when all are on disk)."""
        missing = self._missing(captions)
        if not missing:
            return
        with task("caching text", total=len(missing)) as advance:
            for start in range(0, len(missing), TEXT_BATCH):
                chunk = missing[start : start + TEXT_BATCH]
                self._store(chunk)
                advance(len(chunk))

    def _store(self, captions: list[str]) -> None:
        hidden, pooled = self.encode_fn(captions)
        for i, caption in enumerate(captions):
            row = (hidden[i], None if pooled is None else pooled[i])
            if self.disk is None:
                self.store[caption] = row
                continue
            tensors = {"hidden": row[0]} if row[1] is None else {"hidden": row[0], "pooled": row[1]}
            with atomic_path(self._path(caption)) as tmp:
                save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(tmp))

    def _row(self, caption: str) -> TextRow:
        if self.disk is None:
            return self.store[caption]
        tensors = load_file(str(self._path(caption)), device=str(self.disk.device))
        return tensors["hidden"], tensors.get("pooled")

    @torch.no_grad()
    def get(self, captions: Sequence[str]) -> TextRow:
        missing = self._missing(captions)
        if missing:
            self._store(missing)
        rows = [self._row(c) for c in captions]
        hidden = torch.stack([r[0] for r in rows])
        pooled = None if rows[0][1] is None else torch.stack([r[1] for r in rows])
        return hidden, pooled


def fixed_captions(items: Items, caption_dropout: float) -> list[str]:
    """Every caption a run with fixed captions encodes: each item's, and the empty one
    that caption dropout swaps in."""
    captions = [it.caption for it in [*items.all, *items.validation]]
    return [*captions, ""] if caption_dropout > 0 else captions


def text_encoder(base: BaseModel, clip_skip: int, device: torch.device):
    """A caption-list encoder bound to this model, clip skip and device."""

    def run(captions: list[str]) -> TextRow:
        return encode(base, captions, clip_skip, device)

    return run
