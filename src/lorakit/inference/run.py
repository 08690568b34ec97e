"""Reading a training run folder: its summary, its epoch files and its sample images.

`grid`, `pick` and `loss.png` all start from the same run folder the trainer writes
(`summary.json`, `<name>-000001.safetensors`, `samples/`), so the reading lives here once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.training.checkpoint import SUMMARY, read_summary
from lorakit.training.config import ModelSection, load_config

_SAMPLE = re.compile(r"^(?P<name>.+)_e(?P<epoch>\d{6})_s(?P<step>\d{6})_(?P<index>\d{2})\.png$")


@dataclass(frozen=True)
class EpochFile:
    """One saved epoch of a run."""

    epoch: int
    path: Path


@dataclass(frozen=True)
class SampleImage:
    """A sample image written during training, identified by its file name."""

    path: Path
    epoch: int
    step: int
    index: int


def load_summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json; a one-line error when the folder is not a lorakit run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LorakitError(f"run folder {run_dir} does not exist; pass the training output folder")
    summary = read_summary(run_dir)
    if not summary.get("epochs"):
        raise LorakitError(
            f"{run_dir / SUMMARY} is missing or lists no epochs; pass a folder written by "
            "`lorakit train` after at least one epoch"
        )
    return summary


def run_model_section(run_dir: Path | None) -> ModelSection:
    """The `[model]` section of the run's config.toml (the base's component files and
    architecture folder), or an empty one for no run folder or a folder without it."""
    path = Path(run_dir) / "config.toml" if run_dir is not None else None
    return load_config(path).model if path is not None and path.is_file() else ModelSection()


def chosen_epoch(summary: dict[str, Any]) -> int | None:
    """`lorakit pick`'s epoch once it ran, else the trainer's lowest-loss epoch."""
    chosen = summary.get("pick") or {}
    return chosen["best_epoch"] if "best_epoch" in chosen else summary.get("best_epoch")


def epoch_files(run_dir: Path, summary: dict[str, Any]) -> list[EpochFile]:
    """Saved epochs whose LoRA file is still on disk, oldest first."""
    found = []
    for entry in summary.get("epochs", []):
        name = entry.get("file")
        if name and (Path(run_dir) / name).is_file():
            found.append(EpochFile(int(entry["epoch"]), Path(run_dir) / name))
    return sorted(found, key=lambda item: item.epoch)


def sample_images(run_dir: Path) -> list[SampleImage]:
    """Sample PNGs under `run_dir/samples`, parsed from their `_e…_s…_NN.png` names."""
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.png")):
        match = _SAMPLE.match(path.name)
        if match:
            found.append(
                SampleImage(path, int(match["epoch"]), int(match["step"]), int(match["index"]))
            )
    return found
