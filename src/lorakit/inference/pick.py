"""Choosing the epoch: what the run's own model says of each epoch, plus the guides' signs.

The lowest validation loss is a weak guide (on the tiny world it rose every epoch while
the LoRA got better), so `pick` measures every saved epoch with the base model and the
LoRA (`lorakit.inference.signals`: fidelity and bleed) and `choose` takes the earliest
epoch near the best fidelity among those that do not bleed. The lowest loss
decides only when the signals cannot be measured (no trigger, no config, `--no-signals`).

The guides read three more signs by eye, reported as advice: loss that "drops then rises"
(overfitting), loss still falling at the end (undertrained: train more, or continue from
the LoRA as network weights), and sample images that stop changing from checkpoint to
checkpoint. Everything is stored in summary.json under "pick", leaving every other key as
the trainer wrote it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from lorakit.dataset.images import load_rgb
from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.inference.run import SampleImage, epoch_files, load_summary, sample_images
from lorakit.inference.signals import SignalRun, measure_epochs
from lorakit.training.checkpoint import best_epoch, write_summary

RISE = 0.02  # relative rise of validation loss above its minimum that counts as overfitting
STILL_FALLING = 0.01  # relative drop over the last epoch that counts as "still improving"
METRIC_NAMES = {"val_loss": "validation loss", "train_loss": "training loss"}
MAX_BLEED = 0.65  # bleed above which prompts without the trigger draw the subject too
NEAR_FIDELITY = 0.95  # share of the best clean fidelity that counts as just as good
STILL_SAMPLES = 2.0  # mean abs pixel difference (0-255) below which samples "stop changing"
# The limits above were measured on SD (the tiny world, `bench/quality.py`); FLUX.1's
# figures are measured the same way but no FLUX world has checked the limits yet.
FLUX_NOTE = (
    f"FLUX.1: the signals' limits (bleed ≤ {MAX_BLEED:g}, fidelity within "
    f"{1 - NEAR_FIDELITY:.0%} of the best) were calibrated on SD models; check the chosen "
    "epoch against its neighbours on the grid (lorakit grid RUN_DIR)"
)


@dataclass
class SampleChange:
    """Mean absolute pixel difference between two consecutive epochs' samples."""

    from_epoch: int
    to_epoch: int
    diff: float


@dataclass(frozen=True)
class Choice:
    """The rule's epoch, the signal that decided it, and the line that says why."""

    epoch: int
    decided_by: str
    reason: str


def choose(signals: list[dict[str, float]]) -> Choice | None:
    """The rule: drop the epochs whose bleed exceeds MAX_BLEED; of the rest, take the
    earliest whose fidelity reaches NEAR_FIDELITY of the best (later epochs add little
    and bleed more). When every epoch bleeds, the one that bleeds least."""
    if not signals:
        return None
    clean = [s for s in signals if s["bleed"] <= MAX_BLEED]
    if not clean:
        least = min(signals, key=lambda s: s["bleed"])
        return Choice(
            least["epoch"],
            "bleed",
            f"best epoch {least['epoch']}: every epoch bleeds (prompts without the trigger "
            f"changed more than {MAX_BLEED:g} as much as with it); this one least "
            f"({least['bleed']:.2f}): consider fewer repeats, a lower learning rate or "
            "regularization images",
        )
    top = max(s["fidelity"] for s in clean)
    chosen = next(s for s in clean if s["fidelity"] >= top - (1 - NEAR_FIDELITY) * abs(top))
    return Choice(
        chosen["epoch"],
        "fidelity",
        f"best epoch {chosen['epoch']}: fidelity {chosen['fidelity']:.2f} (best clean "
        f"epoch {top:.2f}), bleed {chosen['bleed']:.2f} ≤ {MAX_BLEED:g}",
    )


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
    loss_epoch: int | None = None  # the lowest-loss epoch, whatever decided best_epoch
    decided_by: str = "validation loss"
    signals: list[dict[str, float]] = field(default_factory=list)  # per epoch, see signals.py
    signal_source: str | None = None
    signal_seconds: float | None = None  # measuring time per epoch
    signal_setup_seconds: float | None = None  # loading the model and the probe, once
    max_bleed: float | None = None  # the rule's bleed limit, when the signals decided


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
        f"{at_best['train_loss']:.4f} to {last['train_loss']:.4f}; if later epochs look "
        "overcooked on the grid, train fewer epochs or lower the learning rate"
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
    report = PickReport(best, _entry(epochs, best).get("file"), _metric(epochs), loss_epoch=best)
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


def apply_signals(report: PickReport, measured: SignalRun, epochs: list[dict[str, Any]]) -> None:
    """Store the measured signals in `report` and let the rule choose its best epoch."""
    report.signals = [{"epoch": epoch, **figures} for epoch, figures in measured.per_epoch.items()]
    report.signal_source = measured.source
    report.signal_seconds = round(measured.seconds_per_epoch, 3)
    report.signal_setup_seconds = round(measured.setup_seconds, 3)
    report.max_bleed = MAX_BLEED
    choice = choose(report.signals)
    if choice is None:
        return
    report.best_epoch, report.decided_by = choice.epoch, choice.decided_by
    report.best_file = _entry(epochs, choice.epoch).get("file")
    # The loss's line stays as information, no longer as the verdict.
    loss_line = [line.replace("best epoch", "lowest-loss epoch", 1) for line in report.advice[:1]]
    report.advice = [choice.reason, *loss_line, *report.advice[1:]]


def pick(
    run_dir: Path,
    still_threshold: float = STILL_SAMPLES,
    signals: bool = True,
    device: str | None = None,
) -> PickReport:
    """Analyse the run, measure the signals of every saved epoch (unless `signals` is off)
    and store the report in its summary.json under "pick" (atomic)."""
    summary = load_summary(run_dir)
    report = analyse(run_dir, still_threshold, summary)
    files = [(item.epoch, item.path) for item in epoch_files(run_dir, summary)]
    if signals and files:
        try:
            measured = measure_epochs(run_dir, summary, files, device)
        except LorakitError as exc:  # a run without trigger or config: the loss still picks
            report.advice.append(f"signals not measured, so the loss chose: {exc}")
        else:
            apply_signals(report, measured, sorted(summary["epochs"], key=lambda e: e["epoch"]))
            if summary.get("family") == FLUX1.value:
                report.advice.append(FLUX_NOTE)
    summary["pick"] = asdict(report)
    write_summary(run_dir, summary)
    return report
