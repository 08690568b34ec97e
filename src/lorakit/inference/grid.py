"""The epoch × weight grid: A1111's XYZ plot for choosing a LoRA, in one command.

Guides build this by hand with prompt search/replace; here columns are LoRA files (a
run's epochs), rows are weights, every cell uses the same seed, and an optional
search/replace list adds a third axis as stacked blocks. Weight 0 is the base model
itself, so it is rendered once per block and shared by every column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rich.progress import Progress

from lorakit.errors import LorakitError
from lorakit.inference.generate import GenerateOptions, model_identity, render, resolve_size
from lorakit.inference.metadata import GenerationInfo, save_png
from lorakit.inference.samplers import canonical_sampler_name
from lorakit.models import BaseModel
from lorakit.network.lora import LoRANetwork

DEFAULT_WEIGHTS = (0.0, 0.4, 0.6, 0.8, 1.0)
BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)


@dataclass(frozen=True)
class GridColumn:
    """One LoRA file shown as a column, with its header text."""

    label: str
    path: Path


@dataclass
class GridSpec:
    """What to render: columns × weights (× search/replace values), one seed for all."""

    prompt: str
    columns: list[GridColumn]
    weights: Sequence[float] = DEFAULT_WEIGHTS
    search_replace: list[str] = field(default_factory=list)
    negative: str = ""
    seed: int = 42
    sampler: str = "Euler a"
    steps: int = 20
    cfg: float = 7.0
    width: int | None = None
    height: int | None = None


def block_prompts(prompt: str, search_replace: Sequence[str]) -> list[tuple[str, str]]:
    """(label, prompt) per block: A1111's S/R replaces the first value by each value in turn."""
    if not search_replace:
        return [("", prompt)]
    search = search_replace[0]
    if search not in prompt:
        raise LorakitError(
            f"--search-replace: {search!r} does not occur in the prompt {prompt!r}; "
            "the first value must be a word of the prompt"
        )
    return [(f"S/R: {value}", prompt.replace(search, value)) for value in search_replace]


def _render_block(
    base: BaseModel, spec: GridSpec, prompt: str, progress: Progress
) -> list[list[Image.Image]]:
    """Cells of one block as rows (weights) of columns (LoRA files)."""
    width, height = resolve_size(base, spec.width, spec.height)
    options = GenerateOptions(
        prompt=prompt,
        negative=spec.negative,
        sampler=spec.sampler,
        steps=spec.steps,
        cfg=spec.cfg,
        width=width,
        height=height,
    )
    rows: dict[float, list[Image.Image]] = {weight: [] for weight in spec.weights}
    base_image = render(base, options, spec.seed, progress)[0] if 0 in rows else None
    for column in spec.columns:
        network = LoRANetwork.from_file(base, column.path, 1.0)
        try:
            for weight in spec.weights:
                if weight == 0:
                    rows[weight].append(base_image)
                    continue
                network.multiplier = weight
                rows[weight].append(render(base, options, spec.seed, progress)[0])
        finally:
            network.remove()
    return [rows[weight] for weight in spec.weights]


def label_font(cell_height: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's scalable default font, sized to stay readable next to the cells."""
    return ImageFont.load_default(size=max(14, cell_height // 14))


def _text_size(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return int(right - left), int(bottom - top)


def _fitted(
    text: str, width: int, font: ImageFont.FreeTypeFont
) -> tuple[str, ImageFont.FreeTypeFont]:
    """Shrink the font (not below 10 px) and then the text until it fits in `width`."""
    while _text_size(font, text)[0] > width - 8 and font.size > 10:
        font = font.font_variant(size=font.size - 1)
    while len(text) > 4 and _text_size(font, text)[0] > width - 8:
        text = text[: len(text) - 5] + "…"
    return text, font


def _strip(width: int, height: int, text: str, font: ImageFont.FreeTypeFont) -> Image.Image:
    """A white strip with `text` centred, shrunk to fit."""
    strip = Image.new("RGB", (width, height), BACKGROUND)
    text, font = _fitted(text, width, font)
    text_w, text_h = _text_size(font, text)
    ImageDraw.Draw(strip).text(
        ((width - text_w) / 2, (height - text_h) / 2), text, font=font, fill=INK, anchor="lt"
    )
    return strip


def compose_block(
    cells: list[list[Image.Image]],
    column_labels: Sequence[str],
    row_labels: Sequence[str],
    title: str = "",
) -> Image.Image:
    """One labelled block: optional title strip, column headers on top, row labels at left."""
    cell_w, cell_h = cells[0][0].size
    font = label_font(cell_h)
    line_h = _text_size(font, "Ag")[1]
    header_h = line_h * 2 + 8
    label_w = max(_text_size(font, label)[0] for label in row_labels) + 24
    title_h = header_h if title else 0
    block = Image.new(
        "RGB",
        (label_w + cell_w * len(column_labels), title_h + header_h + cell_h * len(row_labels)),
        BACKGROUND,
    )
    if title:
        block.paste(_strip(block.width, title_h, title, font), (0, 0))
    for col, text in enumerate(column_labels):
        block.paste(_strip(cell_w, header_h, text, font), (label_w + col * cell_w, title_h))
    for row, (text, images) in enumerate(zip(row_labels, cells, strict=True)):
        top = title_h + header_h + row * cell_h
        block.paste(_strip(label_w, cell_h, text, font), (0, top))
        for col, image in enumerate(images):
            block.paste(image, (label_w + col * cell_w, top))
    return block


def stack_blocks(blocks: Sequence[Image.Image]) -> Image.Image:
    """Blocks one above the other, as A1111 lays out a Z axis."""
    grid = Image.new("RGB", (blocks[0].width, sum(b.height for b in blocks)), BACKGROUND)
    top = 0
    for block in blocks:
        grid.paste(block, (0, top))
        top += block.height
    return grid


def weight_label(weight: float) -> str:
    return f"weight {weight:g}"


def _grid_info(base: BaseModel, spec: GridSpec) -> GenerationInfo:
    width, height = resolve_size(base, spec.width, spec.height)
    model, model_hash = model_identity(base.source)
    return GenerationInfo(
        prompt=spec.prompt,
        negative=spec.negative,
        steps=spec.steps,
        sampler=canonical_sampler_name(spec.sampler),
        cfg=spec.cfg,
        seed=spec.seed,
        width=width,
        height=height,
        model_hash=model_hash,
        model=model,
        extra={
            "X": "LoRA: " + ", ".join(column.label for column in spec.columns),
            "Y": "weight: " + ", ".join(f"{w:g}" for w in spec.weights),
            **({"Z": "S/R: " + ", ".join(spec.search_replace)} if spec.search_replace else {}),
        },
    )


def make_grid(base: BaseModel, spec: GridSpec, out_path: Path) -> Path:
    """Render and save the labelled grid PNG (atomic, with the settings as its infotext)."""
    if not spec.columns:
        raise LorakitError(
            "no LoRA files to compare; pass a run folder with saved epochs or --lora FILE"
        )
    canonical_sampler_name(spec.sampler)
    blocks = []
    with Progress(transient=True) as progress:
        for title, prompt in block_prompts(spec.prompt, spec.search_replace):
            cells = _render_block(base, spec, prompt, progress)
            blocks.append(
                compose_block(
                    cells,
                    [column.label for column in spec.columns],
                    [weight_label(w) for w in spec.weights],
                    title,
                )
            )
    return save_png(stack_blocks(blocks), out_path, _grid_info(base, spec))
