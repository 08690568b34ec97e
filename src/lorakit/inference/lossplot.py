"""`loss.png`: training and validation loss per epoch with the best epoch marked.

Guides pick epochs from TensorBoard's "loss/epoch" curve; this puts the same curve and
the validation loss (it does not fall just because the LoRA memorises the training images)
in one file next to the grid, readable for one epoch or a hundred. Once `lorakit pick` has
measured the epochs, a second panel below shows its signals (fidelity and bleed;
see `lorakit.inference.signals`) on the same epoch axis, since they, not the loss, choose.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from lorakit.fileio import atomic_write_bytes
from lorakit.inference.run import chosen_epoch

SERIES = (
    ("train_loss", "training loss (epoch average)", "tab:blue"),
    ("val_loss", "validation loss", "tab:orange"),
)
SIGNAL_SERIES = (
    ("fidelity", "fidelity (trigger draws the subject)", "tab:purple"),
    ("bleed", "bleed (prompts without the trigger changed)", "tab:red"),
)
SIGNAL_LABELS = {"fidelity": "fidelity", "bleed": "least bleed"}
MARKERS_UP_TO = 40  # epochs; beyond that the dots hide the curve
TICK_EVERY_EPOCH_UP_TO = 20  # one tick per epoch while they fit


def _series(epochs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(e["epoch"]), float(e[key])) for e in epochs if e.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _mark_best(axes: Axes, epochs: list[dict[str, Any]], best: int, decided_by: str | None) -> None:
    """A dashed line at the best epoch and a star on its loss; the label names what chose
    it when pick's signals did."""
    entry = next((e for e in epochs if e.get("epoch") == best), {})
    key = "val_loss" if entry.get("val_loss") is not None else "train_loss"
    label = f"best epoch {best}"
    if entry.get(key) is not None:
        label += f" ({key.replace('_', ' ').replace('val', 'validation')} {entry[key]:.4f})"
        axes.plot([best], [entry[key]], marker="*", markersize=16, color="tab:green", zorder=5)
    if decided_by in SIGNAL_LABELS:
        label = f"best epoch {best} (by {SIGNAL_LABELS[decided_by]})"
    axes.axvline(best, color="tab:green", linestyle="--", linewidth=1.5, label=label)


def _signal_panel(
    axes: Axes, signals: list[dict[str, Any]], marker: str | None, limit: float | None
) -> None:
    for key, label, color in SIGNAL_SERIES:
        xs, ys = _series(signals, key)
        if xs:
            axes.plot(xs, ys, marker=marker, color=color, label=label)
    if limit is not None:
        axes.axhline(limit, color="tab:red", linestyle=":", linewidth=1, label="bleed limit")
    axes.set_ylabel("signal (pick)")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")


def plot_loss(summary: dict[str, Any], out_path: Path, best_epoch: int | None = None) -> Path:
    """Write the loss chart of a run summary to `out_path` (atomic PNG), with pick's
    signals in a panel below when summary["pick"] holds them."""
    epochs = sorted(summary.get("epochs", []), key=lambda e: int(e["epoch"]))
    chosen = summary.get("pick") or {}
    best = best_epoch if best_epoch is not None else chosen_epoch(summary)
    signals = chosen.get("signals") or []
    marker = "o" if len(epochs) <= MARKERS_UP_TO else None
    if signals:
        figure, (axes, lower) = plt.subplots(2, 1, figsize=(8, 7), dpi=120, sharex=True)
    else:
        figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    try:
        for key, label, color in SERIES:
            xs, ys = _series(epochs, key)
            if xs:
                axes.plot(xs, ys, marker=marker, color=color, label=label)
        if best is not None:
            _mark_best(axes, epochs, int(best), chosen.get("decided_by"))
        numbers = [int(e["epoch"]) for e in epochs] or [1]
        axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        axes.margins(y=0.12)
        if len(numbers) <= TICK_EVERY_EPOCH_UP_TO:
            axes.set_xticks(numbers)
        else:
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss (lower is better)")
        axes.set_title(f"{summary.get('name', 'run')}: loss per epoch")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(loc="best")
        if signals:
            _signal_panel(lower, signals, marker, chosen.get("max_bleed"))
            if best is not None:
                lower.axvline(int(best), color="tab:green", linestyle="--", linewidth=1.5)
        (lower if signals else axes).set_xlabel("epoch")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path
