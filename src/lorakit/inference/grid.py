"""The epoch × weight grid: A1111's XYZ plot for choosing a LoRA, in one command.

Guides build this by hand with prompt search/replace; here columns are LoRA files (a
run's epochs), rows are weights, every cell uses the same seed, and an optional
search/replace list adds a third axis as stacked blocks. Weight 0 is the base model
itself, so it is rendered once per block and shared by every column. The layout is the
same for every family; how cells are rendered and described is a `GridRenderer`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lorakit.errors import LorakitError
from lorakit.inference.grid_render import GridRenderer
from lorakit.inference.layout import Axes, compose_block, stack_blocks
from lorakit.inference.metadata import save_png
from lorakit.inference.run import chosen_epoch, epoch_files
from lorakit.progress import shown

DEFAULT_WEIGHTS = (0.0, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class GridColumn:
    """One LoRA file shown as a column, with its header text."""

    label: str
    path: Path
    best: bool = False


@dataclass
class GridSpec:
    """What to render: columns × weights (× search/replace values), one seed for all; the
    sampling settings are the renderer's (`lorakit.inference.grid_render`)."""

    prompt: str
    columns: list[GridColumn]
    weights: Sequence[float] = DEFAULT_WEIGHTS
    search_replace: list[str] = field(default_factory=list)
    x_title: str = "LoRA file"
    seed: int = 42


def epoch_columns(
    run_dir: Path, summary: dict[str, Any], only: Sequence[int] | None = None
) -> list[GridColumn]:
    """A run's saved epochs as columns labelled by epoch number, the best one flagged
    (pick's choice once it ran, else the lowest loss)."""
    files = epoch_files(run_dir, summary)
    missing = sorted(set(only or ()) - {item.epoch for item in files})
    if missing:
        saved = ", ".join(str(item.epoch) for item in files) or "none"
        raise LorakitError(
            f"{run_dir} has no saved LoRA file for epoch {missing[0]}; saved epochs: {saved}"
        )
    if only:
        files = [item for item in files if item.epoch in set(only)]
    best = chosen_epoch(summary)
    signals = {s["epoch"]: s for s in (summary.get("pick") or {}).get("signals") or []}
    return [
        GridColumn(epoch_label(item.epoch, signals.get(item.epoch)), item.path, item.epoch == best)
        for item in files
    ]


def epoch_label(epoch: int, signals: dict[str, float] | None) -> str:
    """The epoch number, with pick's fidelity and bleed (F, B) when it measured them."""
    if not signals:
        return str(epoch)
    return f"{epoch} F{signals['fidelity']:.2f} B{signals['bleed']:.2f}"


def file_columns(paths: Sequence[Path]) -> tuple[list[GridColumn], str]:
    """LoRA files as columns and the x-axis title.

    Files of one run share a long stem prefix (`myface_v3-000004`, `myface_v3-000006`);
    the prefix moves into the axis title so narrow headers show the part that differs.
    """
    stems = [Path(path).stem for path in paths]
    # A prefix of the names as strings, not of paths: `commonpath` would not see it.
    prefix = os.path.commonprefix(stems) if len(stems) > 1 else ""  # noqa: RUF071
    prefix = prefix.rstrip("0123456789")  # keep numbers whole: 000004, not 4
    if len(prefix) < 4 or prefix in stems:
        prefix = ""
    columns = [
        GridColumn(stem[len(prefix) :], Path(p)) for stem, p in zip(stems, paths, strict=True)
    ]
    return columns, f"LoRA file ({prefix}…)" if prefix else "LoRA file"


def block_prompts(prompt: str, search_replace: Sequence[str]) -> list[tuple[str, str]]:
    """(label, prompt) per block: A1111's S/R replaces the first value by each value in turn."""
    if not search_replace:
        return [(f"prompt: {prompt}", prompt)]
    search = search_replace[0]
    if search not in prompt:
        raise LorakitError(
            f"--search-replace: {search!r} does not occur in the prompt {prompt!r}; "
            "the first value must be a word of the prompt"
        )
    replaced = [prompt.replace(search, value) for value in search_replace]
    return [
        (f"prompt: {text}   (S/R: {value})", text)
        for value, text in zip(search_replace, replaced, strict=True)
    ]


def _render_block(renderer: GridRenderer, spec: GridSpec, prompt: str) -> list[list[Image.Image]]:
    """Cells of one block as rows (weights) of columns (LoRA files)."""
    rows: dict[float, list[Image.Image]] = {weight: [] for weight in spec.weights}
    base_image = renderer.render(prompt, 0.0, spec.seed) if 0 in rows else None
    for column in spec.columns:
        with renderer.column(column.path):
            for weight in spec.weights:
                image = base_image if weight == 0 else renderer.render(prompt, weight, spec.seed)
                rows[weight].append(image)
    return [rows[weight] for weight in spec.weights]


def weight_label(weight: float) -> str:
    return f"{weight:g}"


def grid_axes(spec: GridSpec) -> Axes:
    """Axis titles and tick labels: LoRA files (or epochs) across, weights down."""
    best = next((i for i, column in enumerate(spec.columns) if column.best), None)
    labels = [column.label + (" (best)" if column.best else "") for column in spec.columns]
    return Axes(
        x_title=spec.x_title,
        x_labels=labels,
        y_title="LoRA weight",
        y_labels=[weight_label(w) for w in spec.weights],
        best_column=best,
    )


def axis_entries(spec: GridSpec, axes: Axes) -> dict[str, str]:
    """The infotext's axes as A1111's X/Y/Z plot writes them (`Script`, `X Type`, `X Values`,
    …); keys of one letter would not parse back, A1111's pattern needs two characters."""
    entries = {
        "Script": "X/Y/Z plot",
        "X Type": spec.x_title,
        "X Values": ", ".join(column.label for column in spec.columns),
        "Y Type": axes.y_title,
        "Y Values": ", ".join(axes.y_labels),
    }
    if spec.search_replace:
        entries |= {"Z Type": "Prompt S/R", "Z Values": ", ".join(spec.search_replace)}
    return entries


def make_grid(renderer: GridRenderer, spec: GridSpec, out_path: Path) -> Path:
    """Render and save the labelled grid PNG (atomic, with the settings as its infotext)."""
    if not spec.columns:
        raise LorakitError(
            "no LoRA files to compare; pass a run folder with saved epochs or --lora FILE"
        )
    axes = grid_axes(spec)
    blocks = []
    with shown():  # one board for every cell's steps
        for title, prompt in block_prompts(spec.prompt, spec.search_replace):
            blocks.append(compose_block(_render_block(renderer, spec, prompt), axes, title))
    grid = stack_blocks(blocks, renderer.caption(spec.seed), renderer.size()[1])
    return save_png(grid, out_path, renderer.info(spec.prompt, spec.seed, axis_entries(spec, axes)))
