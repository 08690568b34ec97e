"""The demo's "photos": the demo subject from lorakit.synthetic, with the problems real
folders have.

24 pictures of the robot on varied backgrounds, sizes and places, each with a tag caption,
plus a duplicate, a mirrored copy, a blurry shot, a thumbnail, a photo without a caption and
one whose caption lacks the trigger word. Film grain makes them photo-like (and keeps lint's
blur measure meaningful on flat colours).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from lorakit.synthetic.concept import write_concept_images
from lorakit.synthetic.subjects import DEMO_SUBJECT

TRIGGER = "zkz"
CLASS = DEMO_SUBJECT
PHOTOS = 24


def add_grain(path: Path, seed: int, strength: float = 4.0) -> None:
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    noise = np.random.default_rng(seed).normal(0.0, strength, pixels.shape)
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(path)


def write_sample_photos(folder: Path) -> Path:
    """The concept set as a user would bring it, problems included."""
    if folder.exists():
        shutil.rmtree(folder)
    photos = write_concept_images(folder, CLASS, TRIGGER, count=PHOTOS, seed=0)
    for index, photo in enumerate(photos):
        add_grain(photo, index)
    first, second, third = photos[:3]
    first.with_suffix(".txt").unlink()  # one photo without a caption
    caption = second.with_suffix(".txt")
    caption.write_text(caption.read_text(encoding="utf-8").replace(f"{TRIGGER} ", ""), "utf-8")
    shutil.copy(third, folder / f"{third.stem} copy.png")
    with Image.open(photos[3]) as original:
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "selfie_mirror.png")
        original.filter(ImageFilter.GaussianBlur(6)).save(folder / "blurry.png")
        original.resize((128, 128)).save(folder / "thumbnail.png")
    return folder
