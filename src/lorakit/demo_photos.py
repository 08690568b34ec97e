"""The demo's sample "photos": one drawn character, with the problems real folders have.

Drawn with Pillow so the demo needs no download: the same face and hair in every photo,
varying pose, shirt and place, plus a duplicate, a mirrored selfie, a blurry shot, a
thumbnail, a photo without a caption and one whose caption lacks the trigger word.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

TRIGGER = "sks"
CLASS = "person"
PHOTOS = 20
SHIRTS = [(200, 40, 40), (40, 90, 200), (40, 150, 70), (230, 180, 40), (120, 60, 160)]
SCENES = ["beach", "forest", "city street", "studio", "park", "kitchen", "snowy field"]


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """A vertical two-colour gradient with film-grain noise, so it looks photographic."""
    width, height = size
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    grain = rng.integers(-14, 15, (height, width, 3), dtype=np.int16)
    pixels = top * (1 - t) + bottom * t + grain
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _scenery(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    width, height = size
    for _ in range(int(rng.integers(3, 8))):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(20, 120))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x - r, y - r, x + r, y + r), fill=colour)


def _figure(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: tuple[int, int]) -> None:
    """The 'subject': same face and hair in every photo, varying pose, shirt and place."""
    width, height = size
    cx = int(width * rng.uniform(0.35, 0.65))
    head = int(min(size) * rng.uniform(0.12, 0.18))
    cy = int(height * rng.uniform(0.3, 0.42))
    shirt = SHIRTS[int(rng.integers(len(SHIRTS)))]
    draw.rounded_rectangle(
        (cx - 2 * head, cy + head, cx + 2 * head, height), radius=head // 2, fill=shirt
    )
    draw.ellipse((cx - head, cy - head, cx + head, cy + head), fill=(236, 188, 150))
    draw.chord((cx - head, cy - head - 6, cx + head, cy + head // 2), 180, 360, fill=(70, 40, 20))
    for side in (-1, 1):
        ex = cx + side * head // 3
        draw.ellipse((ex - 6, cy - 4, ex + 6, cy + 8), fill=(40, 60, 90))
    draw.arc(
        (cx - head // 2, cy + head // 4, cx + head // 2, cy + head * 2 // 3), 20, 160, "red", 4
    )
    draw.ellipse((cx + head - 4, cy - 8, cx + head + 12, cy + 16), fill=(250, 215, 0))


def draw_photo(seed: int, size: tuple[int, int] = (512, 640)) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    _scenery(draw, rng, size)
    _figure(draw, rng, size)
    return image


def write_sample_photos(folder: Path) -> Path:
    """20 photos with captions, and the usual problems planted among them."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i in range(1, PHOTOS - 3):
        size = (512, 640) if i % 3 else (704, 512)
        draw_photo(i, size).save(folder / f"IMG_{i:04d}.jpg", quality=92)
        scene = SCENES[i % len(SCENES)]
        caption = f"{TRIGGER} {CLASS}, standing in a {scene}"
        if i != 5:  # one photo without a caption
            (folder / f"IMG_{i:04d}.txt").write_text(caption, encoding="utf-8")
    (folder / "IMG_0004.txt").write_text(f"a {CLASS} in a park", encoding="utf-8")
    shutil.copy(folder / "IMG_0002.jpg", folder / "IMG_0002 copy.jpg")
    with Image.open(folder / "IMG_0003.jpg") as original:
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "selfie_mirror.png")
    draw_photo(99).filter(ImageFilter.GaussianBlur(4)).save(folder / "blurry.png")
    draw_photo(98, (200, 240)).save(folder / "thumbnail.png")
    return folder
