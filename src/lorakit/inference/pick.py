"""Choosing the epoch: lowest validation loss plus the over/undertraining signs of the guides.

The guides read three signals by eye: loss that "drops then rises" (overfitting: use the
earlier checkpoint), loss still falling at the end (undertrained: train more, or continue
from the LoRA as network weights), and sample images that stop changing from checkpoint
to checkpoint. `pick` computes all three from the run folder and stores them in
summary.json under "pick", leaving every other key as the trainer wrote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from lorakit.dataset.images import load_rgb
from lorakit.inference.run import SampleImage, load_summary, sample_images
from lorakit.training.checkpoint import best_epoch, write_summary

RISE = 0.02  # relative rise of validation loss above its minimum that counts as overfitting
STILL_FALLING = 0.01  # relative drop over the last epoch that counts as "still improving"
METRIC_NAMES = {"val_loss": "validation loss", "train_loss": "training loss"}
STILL_SAMPLES = 2.0  # mean abs pixel difference (0-255) below which samples "stop changing"


@dataclass
class SampleChange:
    """Mean absolute pixel difference between two consecutive epochs' samples."""

    from_epoch: int
    to_epoch: int
    diff: float


@dataclass
class PickReport:
    """The chosen epoch and the reasons, as stored under summary["pick"]."""

    best_epoch: int | None
    best_file: str | None
    metric: str
    overfitting: bool = False
    undertrained: bool = False
    samples_still_from: int | None = None
    sample_changes: list[SampleChange] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)


def _metric(epochs: list[dict[str, Any]]) -> str:
    return "val_loss" if all(e.get("val_loss") is not None for e in epochs) else "train_loss"


def _entry(epochs: list[dict[str, Any]], epoch: int | None) -> dict[str, Any]:
    return next((e for e in epochs if e.get("epoch") == epoch), {})


def overfitting_advice(epochs: list[dict[str, Any]], best: int | None) -> str | None:
    """Validation loss rose past its minimum while training loss kept falling."""
    if best is None or _metric(epochs) != "val_loss":
        return None
    at_best, last = _entry(epochs, best), epochs[-1]
    if last["epoch"] == best or last["val_loss"] <= at_best["val_loss"] * (1 + RISE):
        return None
    if last.get("train_loss") is None or last["train_loss"] >= at_best.get("train_loss", 0.0):
        return None
    return (
        f"overfitting: validation loss rose from {at_best['val_loss']:.4f} (epoch {best}) to "
        f"{last['val_loss']:.4f} (epoch {last['epoch']}) while training loss fell from "
        f"{at_best['train_loss']:.4f} to {last['train_loss']:.4f}; use epoch {best}, or train "
        "fewer epochs / lower the learning rate"
    )


def undertrained_advice(epochs: list[dict[str, Any]], last_file: str | None) -> str | None:
    """The loss was still falling over the last epoch: more training would still help."""
    metric = _metric(epochs)
    scored = [e for e in epochs if e.get(metric) is not None]
    if len(scored) < 2:
        return None
    before, last = scored[-2][metric], scored[-1][metric]
    if last >= before * (1 - STILL_FALLING):
        return None
    source = (
        f"continue from {last_file} as network weights "
        f"(lorakit train CONFIG --set 'network.weights=\"{last_file}\"')"
        if last_file
        else "continue it"
    )
    return (
        f"undertrained: {METRIC_NAMES[metric]} still falling at the last epoch "
        f"({before:.4f} → {last:.4f}); train more epochs or {source}"
    )


def _last_per_epoch(samples: list[SampleImage]) -> dict[int, dict[int, Path]]:
    """For each epoch, the latest sample of each prompt index."""
    chosen: dict[int, dict[int, SampleImage]] = {}
    for sample in samples:
        current = chosen.setdefault(sample.epoch, {}).get(sample.index)
        if current is None or sample.step > current.step:
            chosen[sample.epoch][sample.index] = sample
    return {epoch: {i: s.path for i, s in by.items()} for epoch, by in chosen.items()}


def _pixels(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    rgb = load_rgb(path)
    if size is not None and rgb.size != size:
        rgb = rgb.resize(size)
    return np.asarray(rgb, dtype=np.float32)


def image_difference(a: Path, b: Path) -> float:
    """Mean absolute pixel difference (0-255) between two images, resized to match."""
    first = _pixels(a)
    return float(np.abs(first - _pixels(b, (first.shape[1], first.shape[0]))).mean())


def sample_changes(samples: list[SampleImage]) -> list[SampleChange]:
    """How much the samples changed between consecutive sampled epochs (prompts averaged)."""
    per_epoch = _last_per_epoch(samples)
    changes = []
    for before, after in pairwise(sorted(per_epoch)):
        shared = sorted(set(per_epoch[before]) & set(per_epoch[after]))
        if shared:
            diffs = [image_difference(per_epoch[before][i], per_epoch[after][i]) for i in shared]
            changes.append(SampleChange(before, after, round(float(np.mean(diffs)), 3)))
    return changes


def still_from(changes: list[SampleChange], threshold: float = STILL_SAMPLES) -> int | None:
    """The epoch after which every later change stays under `threshold` (None if never)."""
    start = None
    for change in reversed(changes):
        if change.diff >= threshold:
            break
        start = change.from_epoch
    return start


def analyse(
    run_dir: Path, still_threshold: float = STILL_SAMPLES, summary: dict[str, Any] | None = None
) -> PickReport:
    """All signals for the run in `run_dir` (its summary read unless given), writing nothing."""
    if summary is None:
        summary = load_summary(run_dir)
    epochs = sorted(summary["epochs"], key=lambda e: e["epoch"])
    best = best_epoch(epochs)
    report = PickReport(best, _entry(epochs, best).get("file"), _metric(epochs))
    if best is not None:
        value = _entry(epochs, best)[report.metric]
        report.advice.append(
            f"best epoch {best} ({report.best_file or 'not saved'}): lowest "
            f"{METRIC_NAMES[report.metric]} {value:.4f}"
        )
    saved = [str(Path(run_dir) / e["file"]) for e in epochs if e.get("file")]
    signs = (
        overfitting_advice(epochs, best),
        undertrained_advice(epochs, saved[-1] if saved else None),
    )
    report.overfitting, report.undertrained = signs[0] is not None, signs[1] is not None
    report.advice += [sign for sign in signs if sign]
    report.sample_changes = sample_changes(sample_images(run_dir))
    report.samples_still_from = still_from(report.sample_changes, still_threshold)
    if report.samples_still_from is not None:
        report.advice.append(
            f"samples stop changing after epoch {report.samples_still_from} (mean pixel change "
            f"< {still_threshold:g}/255): later epochs add little, or the LoRA stopped learning"
        )
    return report


def pick(run_dir: Path, still_threshold: float = STILL_SAMPLES) -> PickReport:
    """Analyse the run and store the report in its summary.json under "pick" (atomic)."""
    summary = load_summary(run_dir)
    report = analyse(run_dir, still_threshold, summary)
    summary["pick"] = asdict(report)
    write_summary(run_dir, summary)
    return report
