"""The subjects: multi-coloured figures with a fixed identity that the base model never sees.

Each is drawn in a unit frame ([-1, 1] on both axes, y down) scaled to the scene's size, so
size, position, background and pose (mirroring) vary while the identity stays. Their
colours stay off the shape palette where they can, so a LoRA has something new to learn.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import ImageDraw

from lorakit.synthetic.scenes import Placement

Colour = tuple[int, int, int]


class Pen:
    """Draws unit-frame primitives into a supersampled image at a placement."""

    def __init__(self, draw: ImageDraw.ImageDraw, at: Placement, mirrored: bool) -> None:
        self.draw, self.at, self.flip = draw, at, -1.0 if mirrored else 1.0

    def _xy(self, x: float, y: float) -> tuple[float, float]:
        r = self.at.extent / 2
        return self.at.cx + self.flip * x * r, self.at.cy + y * r

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, ...]:
        (ax, ay), (bx, by) = self._xy(x0, y0), self._xy(x1, y1)
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Colour) -> None:
        self.draw.rectangle(self.box(x0, y0, x1, y1), fill=fill)

    def disc(self, x: float, y: float, radius: float, fill: Colour) -> None:
        self.draw.ellipse(self.box(x - radius, y - radius, x + radius, y + radius), fill=fill)

    def poly(self, points: list[tuple[float, float]], fill: Colour) -> None:
        self.draw.polygon([self._xy(x, y) for x, y in points], fill=fill)


def robot(pen: Pen) -> None:
    pen.rect(-0.55, -0.15, 0.55, 0.95, (0, 128, 128))  # teal body
    pen.rect(-0.38, -0.9, 0.38, -0.22, (255, 140, 0))  # orange head
    pen.disc(-0.17, -0.58, 0.11, (250, 250, 250))
    pen.disc(0.17, -0.58, 0.11, (250, 250, 250))
    pen.rect(0.55, 0.05, 0.9, 0.25, (255, 140, 0))  # one raised arm: a pose to mirror


def flower(pen: Pen) -> None:
    pen.rect(-0.06, 0.1, 0.06, 1.0, (30, 120, 30))  # stem
    pen.poly([(0.06, 0.6), (0.55, 0.35), (0.06, 0.8)], (30, 120, 30))  # one leaf
    for x, y in ((0, -0.72), (0.42, -0.42), (0.3, 0.05), (-0.3, 0.05), (-0.42, -0.42)):
        pen.disc(x, y - 0.05, 0.3, (230, 40, 160))  # magenta petals
    pen.disc(0, -0.3, 0.22, (250, 220, 60))


def house(pen: Pen) -> None:
    pen.rect(-0.7, -0.1, 0.7, 0.95, (150, 90, 40))  # brown walls
    pen.poly([(-0.9, -0.05), (0.0, -0.95), (0.9, -0.05)], (200, 30, 30))  # red roof
    pen.rect(-0.45, 0.35, -0.1, 0.95, (60, 40, 20))  # door, off centre
    pen.rect(0.15, 0.15, 0.5, 0.5, (120, 200, 250))  # window


def mushroom(pen: Pen) -> None:
    pen.rect(-0.25, 0.0, 0.25, 0.95, (245, 230, 200))  # cream stem
    pen.poly([(-0.95, 0.05), (-0.7, -0.6), (0.0, -0.9), (0.7, -0.6), (0.95, 0.05)], (220, 30, 30))
    for x, y, radius in ((-0.45, -0.35, 0.14), (0.1, -0.6, 0.12), (0.5, -0.25, 0.11)):
        pen.disc(x, y, radius, (250, 250, 250))


SUBJECTS: dict[str, Callable[[Pen], None]] = {
    "robot": robot,
    "flower": flower,
    "house": house,
    "mushroom": mushroom,
}
DEMO_SUBJECT = "robot"


def draw_subject(draw: ImageDraw.ImageDraw, name: str, at: Placement, *, mirrored: bool) -> None:
    SUBJECTS[name](Pen(draw, at, mirrored))
