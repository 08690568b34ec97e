"""`loss.png`: training and validation loss per epoch with the best epoch marked.

Guides pick epochs from TensorBoard's "loss/epoch" curve; this puts the same curve and
the validation loss (the better signal) in one file next to the grid.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from lorakit.fileio import atomic_write_bytes


def _series(epochs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(int(e["epoch"]), float(e[key])) for e in epochs if e.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_loss(summary: dict[str, Any], out_path: Path, best_epoch: int | None = None) -> Path:
    """Write the loss chart of a run summary to `out_path` (atomic PNG)."""
    epochs = summary.get("epochs", [])
    best = best_epoch if best_epoch is not None else summary.get("best_epoch")
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        for key, label in (
            ("train_loss", "training loss (epoch average)"),
            ("val_loss", "validation loss"),
        ):
            xs, ys = _series(epochs, key)
            if xs:
                axes.plot(xs, ys, marker="o", label=label)
        if best is not None:
            axes.axvline(best, color="tab:green", linestyle="--", label=f"best epoch {best}")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("loss")
        axes.set_title(f"{summary.get('name', 'run')}: loss per epoch")
        axes.grid(alpha=0.3)
        axes.legend()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight")
    finally:
        plt.close(figure)
    atomic_write_bytes(out_path, buffer.getvalue())
    return out_path
