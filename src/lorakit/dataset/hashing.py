"""Perceptual hashes for duplicate and mirrored-pair detection, in numpy and Pillow.

A byte hash only finds copies of the same file. The same photo re-saved, resized or
re-compressed keeps its perceptual hashes: pHash (signs of the lowest 8×8 DCT
frequencies of a 32×32 thumbnail, robust to resizing and compression) and dHash (signs of
horizontal gradients of a 9×8 thumbnail, robust to brightness). A pair counts as near
duplicate only when both agree, which keeps look-alike but different shots apart.
Mirrored selfies are found the same way: hash the horizontally flipped image and compare.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# Hamming distances (out of 64 bits) at or below which two thumbnails are the same picture.
PHASH_NEAR = 8
DHASH_NEAR = 12


@dataclass(frozen=True)
class ImageHashes:
    phash: int
    dhash: int
    phash_flipped: int
    dhash_flipped: int


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis, so dct(x) = M @ x @ M.T for an n×n block."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT32 = _dct_matrix(32)


def _bits_to_int(bits: np.ndarray) -> int:
    return int("".join("1" if b else "0" for b in bits.ravel()), 2)


def phash(gray: Image.Image) -> int:
    """64-bit pHash of a greyscale image."""
    pixels = np.asarray(gray.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8]
    return _bits_to_int(low > np.median(low))


def dhash(gray: Image.Image) -> int:
    """64-bit difference hash: is each pixel brighter than its right neighbour?"""
    pixels = np.asarray(gray.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float64)
    return _bits_to_int(pixels[:, 1:] > pixels[:, :-1])


def image_hashes(gray: Image.Image) -> ImageHashes:
    flipped = gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return ImageHashes(phash(gray), dhash(gray), phash(flipped), dhash(flipped))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def file_sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _near(p1: int, d1: int, p2: int, d2: int) -> bool:
    return hamming(p1, p2) <= PHASH_NEAR and hamming(d1, d2) <= DHASH_NEAR


def is_near_duplicate(a: ImageHashes, b: ImageHashes) -> bool:
    return _near(a.phash, a.dhash, b.phash, b.dhash)


def is_mirror_pair(a: ImageHashes, b: ImageHashes) -> bool:
    """b looks like a flipped a, and not like a itself (symmetric shots are duplicates)."""
    return _near(a.phash_flipped, a.dhash_flipped, b.phash, b.dhash) and not is_near_duplicate(a, b)


def exact_duplicate_groups(paths: Sequence[Path], digests: Sequence[str]) -> list[list[Path]]:
    """Files with identical bytes, grouped; only groups of two or more. Each group starts
    with the shortest name, the likely original ("IMG_1.jpg" before "IMG_1 copy.jpg")."""
    groups: dict[str, list[Path]] = {}
    for path, digest in zip(paths, digests, strict=True):
        groups.setdefault(digest, []).append(path)
    return [
        sorted(group, key=lambda p: (len(p.name), p.name))
        for group in groups.values()
        if len(group) > 1
    ]


def similar_pairs(
    paths: Sequence[Path], hashes: Sequence[ImageHashes], *, mirrored: bool
) -> list[tuple[Path, Path]]:
    """All pairs that are near duplicates (or, with `mirrored`, mirror images)."""
    test = is_mirror_pair if mirrored else is_near_duplicate
    items = list(zip(paths, hashes, strict=True))
    return [(pa, pb) for (pa, ha), (pb, hb) in itertools.combinations(items, 2) if test(ha, hb)]
