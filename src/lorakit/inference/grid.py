"""The epoch × weight grid: A1111's XYZ plot for choosing a LoRA, in one command.

Guides build this by hand with prompt search/replace; here columns are LoRA files (a
run's epochs), rows are weights, every cell uses the same seed, and an optional
search/replace list adds a third axis as stacked blocks. Weight 0 is the base model
itself, so it is rendered once per block and shared by every column.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from lorakit.errors import LorakitError
from lorakit.inference.generate import (
    GenerateOptions,
    generation_info,
    model_identity,
    render,
    resolve_size,
)
from lorakit.inference.layout import Axes, compose_block, stack_blocks
from lorakit.inference.metadata import GenerationInfo, save_png
from lorakit.inference.run import chosen_epoch, epoch_files
from lorakit.inference.samplers import canonical_sampler_name
from lorakit.models import BaseModel
from lorakit.network.lora import LoRANetwork
from lorakit.progress import Board, shown

DEFAULT_WEIGHTS = (0.0, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class GridColumn:
    """One LoRA file shown as a column, with its header text."""

    label: str
    path: Path
    best: bool = False


@dataclass
class GridSpec:
    """What to render: columns × weights (× search/replace values), one seed for all."""

    prompt: str
    columns: list[GridColumn]
    weights: Sequence[float] = DEFAULT_WEIGHTS
    search_replace: list[str] = field(default_factory=list)
    x_title: str = "LoRA file"
    negative: str = ""
    seed: int = 42
    sampler: str = "Euler a"
    steps: int = 20
    cfg: float = 7.0
    width: int | None = None
    height: int | None = None


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


def _options(spec: GridSpec, prompt: str) -> GenerateOptions:
    return GenerateOptions(
        prompt=prompt,
        negative=spec.negative,
        width=spec.width,
        height=spec.height,
        steps=spec.steps,
        cfg=spec.cfg,
        sampler=spec.sampler,
    )


def _render_block(
    base: BaseModel, spec: GridSpec, prompt: str, progress: Board
) -> list[list[Image.Image]]:
    """Cells of one block as rows (weights) of columns (LoRA files)."""
    options = _options(spec, prompt)
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


def settings_caption(base: BaseModel, spec: GridSpec) -> str:
    """One line with what every cell shares, so a screenshot of the grid stands alone."""
    width, height = resolve_size(base, spec.width, spec.height)
    model, _ = model_identity(base.source)
    parts = [
        f"seed {spec.seed}",
        canonical_sampler_name(spec.sampler),
        f"{spec.steps} steps",
        f"CFG {spec.cfg:g}",
        f"{width}×{height}",
        model,
    ]
    return " · ".join(parts)


def _grid_info(base: BaseModel, spec: GridSpec, axes: Axes) -> GenerationInfo:
    z_axis = {"Z": "S/R: " + ", ".join(spec.search_replace)} if spec.search_replace else {}
    x_values = ", ".join(column.label for column in spec.columns)
    extra = {
        "X": f"{spec.x_title}: {x_values}",
        "Y": f"{axes.y_title}: " + ", ".join(axes.y_labels),
        **z_axis,
    }
    return generation_info(base, _options(spec, spec.prompt), spec.seed, extra=extra)


def make_grid(base: BaseModel, spec: GridSpec, out_path: Path) -> Path:
    """Render and save the labelled grid PNG (atomic, with the settings as its infotext)."""
    if not spec.columns:
        raise LorakitError(
            "no LoRA files to compare; pass a run folder with saved epochs or --lora FILE"
        )
    canonical_sampler_name(spec.sampler)
    axes = grid_axes(spec)
    blocks = []
    with shown() as progress:
        for title, prompt in block_prompts(spec.prompt, spec.search_replace):
            cells = _render_block(base, spec, prompt, progress)
            blocks.append(compose_block(cells, axes, title))
    cell_height = resolve_size(base, spec.width, spec.height)[1]
    grid = stack_blocks(blocks, settings_caption(base, spec), cell_height)
    return save_png(grid, out_path, _grid_info(base, spec, axes))
