"""Drawn "photos" of one character (face, hair, shirt on busy scenery) for dataset tests.

Photo-like: gradients, film grain and clutter, at the sizes phones produce, so lint, prep
and face tools meet what users bring. (They used to be the demo's photos; the demo now
draws its subject from lorakit.synthetic, which the tiny model can learn.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SHIRTS = [(200, 40, 40), (40, 90, 200), (40, 150, 70), (230, 180, 40), (120, 60, 160)]


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
