"""Procedural scenes: one shape or one subject on a plain background, with tag captions.

Every attribute is a small closed vocabulary so that a classifier can check a generated
image against its prompt. Object and background colours come from separate palettes: a
model of a few million parameters then only has to learn which words matter, not which
noun a colour binds to (DESIGN.md: keep the distribution simple enough to learn).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

SIDE = 64
SUPERSAMPLE = 4

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (240, 200, 20),
    "purple": (148, 60, 189),
}
BACKGROUNDS = {
    "white": (236, 236, 236),
    "black": (24, 24, 24),
    "gray": (128, 128, 128),
    "pink": (250, 190, 205),
}
SIZES = {"small": 0.36, "large": 0.58}  # object extent as a fraction of the image side
POSITIONS = {"left": 0.3, "center": 0.5, "right": 0.7}  # horizontal centre

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "size": tuple(SIZES),
    "position": tuple(POSITIONS),
    "background": tuple(BACKGROUNDS),
}


@dataclass(frozen=True)
class Scene:
    """What an image shows; `shape` and `colour` are empty for a subject scene."""

    background: str
    size: str
    position: str
    shape: str = ""
    colour: str = ""
    subject: str = ""
    mirrored: bool = False

    def combo(self) -> tuple[str, ...]:
        return (self.shape, self.colour, self.size, self.position, self.background)

    def tags(self) -> list[str]:
        """Tags in a fixed order: the object first, then size, position and background."""
        thing = self.subject or f"{self.colour} {self.shape}"
        return [thing, self.size, self.position, f"{self.background} background"]

    def caption(self) -> str:
        return ", ".join(self.tags())


def held_out(scene: Scene) -> bool:
    """True for the fifth of all attribute combinations the base model never sees.

    Chosen by hash so every single value (and nearly every pair) still occurs in training:
    the held-out set tests composition, not unseen words.
    """
    digest = hashlib.sha256("|".join(scene.combo()).encode()).digest()
    return digest[0] % 5 == 0


def all_combos() -> list[Scene]:
    return [
        Scene(shape=shape, colour=colour, size=size, position=position, background=background)
        for shape in SHAPES
        for colour in COLOURS
        for size in SIZES
        for position in POSITIONS
        for background in BACKGROUNDS
    ]


def random_scene(rng: random.Random, *, split: str = "train") -> Scene:
    """A shape scene from the training combinations (`split="train"`) or the held-out ones."""
    want_held = split == "held_out"
    while True:
        scene = Scene(
            shape=rng.choice(SHAPES),
            colour=rng.choice(tuple(COLOURS)),
            size=rng.choice(tuple(SIZES)),
            position=rng.choice(tuple(POSITIONS)),
            background=rng.choice(tuple(BACKGROUNDS)),
        )
        if held_out(scene) == want_held:
            return scene


@dataclass(frozen=True)
class Placement:
    """Where and how large the object is drawn, in supersampled pixels, with jitter."""

    cx: float
    cy: float
    extent: float


def place(scene: Scene, rng: random.Random) -> Placement:
    big = SIDE * SUPERSAMPLE
    extent = SIZES[scene.size] * big * rng.uniform(0.9, 1.1)
    cx = POSITIONS[scene.position] * big + rng.uniform(-0.04, 0.04) * big
    cy = 0.5 * big + rng.uniform(-0.08, 0.08) * big
    return Placement(cx, cy, extent)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, at: Placement, fill: tuple) -> None:
    r = at.extent / 2
    box = (at.cx - r, at.cy - r, at.cx + r, at.cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        s = r * 0.86  # equal visual area with the circle
        draw.rectangle((at.cx - s, at.cy - s, at.cx + s, at.cy + s), fill=fill)
    else:
        h = r * math.sqrt(3) / 1.2
        draw.polygon(
            [
                (at.cx, at.cy - h * 0.62),
                (at.cx - r, at.cy + h * 0.48),
                (at.cx + r, at.cy + h * 0.48),
            ],
            fill=fill,
        )


def render(scene: Scene, rng: random.Random, side: int = SIDE) -> Image.Image:
    """The RGB image of `scene` (64×64 unless asked), drawn at 4× and box-filtered."""
    from lorakit.synthetic.subjects import draw_subject

    big = SIDE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    at = place(scene, rng)
    if scene.subject:
        draw_subject(draw, scene.subject, at, mirrored=scene.mirrored)
    else:
        draw_shape(draw, scene.shape, at, COLOURS[scene.colour])
    return image.resize((side, side), Image.Resampling.BOX)


def render_array(scenes: list[Scene], seed: int) -> np.ndarray:
    """Scenes as a uint8 array (N, 64, 64, 3), reproducible from `seed`."""
    rng = random.Random(seed)
    return np.stack([np.asarray(render(scene, rng)) for scene in scenes])


def with_background(scene: Scene, background: str) -> Scene:
    return replace(scene, background=background)
