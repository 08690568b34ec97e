"""Drawing the labelled grid: fonts, wrapped label strips, axis titles and blocks.

A grid is only useful if its labels can be read at the size people look at it: 512 px
cells viewed scaled down, and the 64 px cells of a quick test. So the font scales with the
cell (about 1/16 of its height) but never drops below `MIN_FONT` px, labels wrap onto two
lines before they shrink, and the cell is never resized or drawn over — the pixels of
each cell are exactly the generated image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

MIN_FONT = 13  # px: DejaVu Sans stays legible down to about this size
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (90, 90, 90)
BEST_FILL = (214, 240, 214)  # pale green behind the best column's header
BEST_INK = (0, 110, 0)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Axes:
    """What the grid's axes mean: titles, tick labels and the highlighted column."""

    x_title: str
    x_labels: Sequence[str]
    y_title: str
    y_labels: Sequence[str]
    best_column: int | None = None


@lru_cache(maxsize=32)
def font(size: int, bold: bool = False) -> Font:
    """DejaVu Sans (shipped with matplotlib, a dependency) at `size` px; Pillow's own otherwise."""
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def font_size(cell_height: int) -> int:
    """Label size for a cell: a 16th of its height, at least `MIN_FONT`."""
    return max(MIN_FONT, round(cell_height / 16))


def text_width(text: str, face: Font) -> int:
    return int(face.getlength(text))


def line_height(face: Font) -> int:
    ascent, descent = face.getmetrics()
    return int((ascent + descent) * 1.15)


def _pieces(word: str, width: int, face: Font) -> list[str]:
    """`word` cut into runs of characters that each fit in `width` (long file names)."""
    pieces = [""]
    for char in word:
        if pieces[-1] and text_width(pieces[-1] + char, face) > width:
            pieces.append("")
        pieces[-1] += char
    return pieces


def _ellipsis(text: str, width: int, face: Font) -> str:
    while len(text) > 1 and text_width(text + "…", face) > width:
        text = text[:-1]
    return text + "…"


def wrap(text: str, width: int, face: Font, max_lines: int = 2) -> list[str]:
    """Word wrap into at most `max_lines`; words too long for a line are cut, the rest "…"."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", face) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines += _pieces(word, width, face)
    if len(lines) > max_lines:
        lines = [*lines[: max_lines - 1], _ellipsis(lines[max_lines - 1], width, face)]
    return lines or [""]


def paragraph(width: int, text: str, face: Font, **style: object) -> Image.Image:
    """`text` over the full `width`, on up to three lines (titles on narrow grids)."""
    lines = len(wrap(text, width - 8, face, max_lines=3))
    return text_strip((width, line_height(face) * lines + 8), text, face, max_lines=3, **style)


def text_strip(
    size: tuple[int, int],
    text: str,
    face: Font,
    *,
    fill: tuple[int, int, int] = BACKGROUND,
    ink: tuple[int, int, int] = INK,
    max_lines: int = 2,
) -> Image.Image:
    """A `size` strip with `text` wrapped and centred in it."""
    strip = Image.new("RGB", size, fill)
    lines = wrap(text, size[0] - 8, face, max_lines)
    step = line_height(face)
    top = (size[1] - step * len(lines)) / 2
    draw = ImageDraw.Draw(strip)
    for i, line in enumerate(lines):
        draw.text((size[0] / 2, top + i * step), line, font=face, fill=ink, anchor="ma")
    return strip


def vertical_strip(size: tuple[int, int], text: str, face: Font) -> Image.Image:
    """A `size` strip with `text` written bottom-to-top, as a y-axis title."""
    width, height = size
    return text_strip((height, width), text, face, max_lines=1).rotate(90, expand=True)


def compose_block(cells: list[list[Image.Image]], axes: Axes, title: str = "") -> Image.Image:
    """One labelled block: title, x-axis title and tick labels on top, y-axis at left."""
    cell_w, cell_h = cells[0][0].size
    size = font_size(cell_h)
    plain, bold = font(size), font(size, bold=True)
    line = line_height(plain)
    y_title_w = line + 8
    tick_w = max(text_width(label, plain) for label in axes.y_labels) + 2 * size
    left = y_title_w + tick_w
    x_title_h, header_h = line + 4, 2 * line + 8
    width = left + cell_w * len(axes.x_labels)
    title_strip = paragraph(width, title, bold) if title else None
    title_h = title_strip.height if title_strip else 0
    top = title_h + x_title_h + header_h
    block = Image.new("RGB", (width, top + cell_h * len(axes.y_labels)), BACKGROUND)
    if title_strip:
        block.paste(title_strip, (0, 0))
    x_title = text_strip((width - left, x_title_h), axes.x_title, plain, ink=MUTED)
    block.paste(x_title, (left, title_h))
    for col, label in enumerate(axes.x_labels):
        best = col == axes.best_column
        header = text_strip(
            (cell_w, header_h),
            label,
            bold if best else plain,
            fill=BEST_FILL if best else BACKGROUND,
            ink=BEST_INK if best else INK,
        )
        block.paste(header, (left + col * cell_w, title_h + x_title_h))
    y_title = vertical_strip((y_title_w, cell_h * len(axes.y_labels)), axes.y_title, plain)
    block.paste(y_title, (0, top))
    for row, (label, images) in enumerate(zip(axes.y_labels, cells, strict=True)):
        block.paste(text_strip((tick_w, cell_h), label, plain), (y_title_w, top + row * cell_h))
        for col, image in enumerate(images):
            block.paste(image, (left + col * cell_w, top + row * cell_h))
    return block


def stack_blocks(
    blocks: Sequence[Image.Image], caption: str = "", cell_height: int = 0
) -> Image.Image:
    """Blocks one above the other (A1111's Z axis) under a one-line `caption`."""
    face = font(font_size(cell_height))
    width = max(b.width for b in blocks)
    head = paragraph(width, caption, face, ink=MUTED) if caption else None
    top = head.height if head else 0
    grid = Image.new("RGB", (width, top + sum(b.height for b in blocks)), BACKGROUND)
    if head:
        grid.paste(head, (0, 0))
    for block in blocks:
        grid.paste(block, (0, top))
        top += block.height
    return grid
