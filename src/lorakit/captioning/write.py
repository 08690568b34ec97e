"""Caption a dataset folder: find the images, run a captioner in batches, write the files.

Images are found with the same scan the trainer uses, and each caption is written next
to its image with the caption extension the trainer reads by default (`.txt`), so the
classic "captions silently ignored" mismatch cannot happen with default options. Existing
captions are never touched unless the user says how (`overwrite`, `append` or `skip`):
hand-written captions are too expensive to lose to a re-run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table

from lorakit.captioning.base import Captioner
from lorakit.captioning.choices import DEFAULT_EXT, ExistingCaptions
from lorakit.captioning.prefix import CaptionStyle
from lorakit.captioning.tags import tag_frequencies
from lorakit.dataset.images import load_rgb
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.progress import track


@dataclass(frozen=True)
class CaptionJob:
    """One image to caption, its caption file and that file's current text (if any)."""

    image: Path
    target: Path
    existing: str | None


@dataclass
class CaptionPlan:
    root: Path
    jobs: list[CaptionJob]
    skipped: list[Path] = field(default_factory=list)


@dataclass
class CaptionRun:
    written: dict[Path, str] = field(default_factory=dict)
    skipped: list[Path] = field(default_factory=list)

    @property
    def frequencies(self) -> Counter[str]:
        return tag_frequencies(self.written.values())


def normalize_ext(ext: str) -> str:
    """'.txt' for 'txt' or '.txt'; an error for something that is not an extension."""
    ext = ext.strip()
    ext = ext if ext.startswith(".") else f".{ext}"
    if len(ext) < 2 or any(c in ext for c in "/\\ *?"):
        raise LorakitError(f"--ext {ext!r}: not a file extension; use e.g. --ext .txt")
    return ext


def plan_captions(
    root: Path, ext: str = DEFAULT_EXT, existing: ExistingCaptions | None = None
) -> CaptionPlan:
    """Which images get a caption, refusing to guess what to do with existing ones."""
    ext = normalize_ext(ext)
    scan = scan_dataset(root, caption_ext=ext)
    # An empty caption file holds nothing to protect, so it counts as uncaptioned.
    jobs = [CaptionJob(r.path, r.path.with_suffix(ext), r.caption or None) for r in scan.records]
    captioned = [job for job in jobs if job.existing is not None]
    if captioned and existing is None:
        raise LorakitError(
            f"{root}: {len(captioned)} of {len(jobs)} images already have {ext} captions "
            f"(e.g. {captioned[0].target.name}); pass --overwrite, --append or --skip"
        )
    if existing is ExistingCaptions.SKIP:
        return CaptionPlan(
            root=Path(root),
            jobs=[job for job in jobs if job.existing is None],
            skipped=[job.image for job in captioned],
        )
    if existing is ExistingCaptions.OVERWRITE:
        jobs = [CaptionJob(job.image, job.target, None) for job in jobs]
    return CaptionPlan(root=Path(root), jobs=jobs)


def _batches(jobs: Sequence[CaptionJob], size: int) -> list[Sequence[CaptionJob]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), size)]


def run_captions(
    plan: CaptionPlan,
    captioner: Captioner,
    style: CaptionStyle,
    batch_size: int = 4,
) -> CaptionRun:
    """Caption every planned image, writing each batch's files as soon as it is done.

    Writing per batch (atomically) means an interrupted run keeps its finished captions
    and `--skip` resumes it.
    """
    if batch_size < 1:
        raise LorakitError(f"--batch-size {batch_size}: must be at least 1")
    run = CaptionRun(skipped=list(plan.skipped))
    for batch in track(_batches(plan.jobs, batch_size), "Captioning"):
        parts = captioner.caption([load_rgb(job.image) for job in batch])
        for job, generated in zip(batch, parts, strict=True):
            text = style.compose(generated, job.existing)
            atomic_write_text(job.target, text + "\n")
            run.written[job.target] = text
    return run


def frequency_table(frequencies: Counter[str], captions: int, top: int = 30) -> Table:
    """The most common tags with how many captions hold them, for a quick sanity look."""
    table = Table(title=f"tag frequencies over {captions} captions")
    table.add_column("tag")
    table.add_column("captions", justify="right")
    table.add_column("share", justify="right")
    for tag, count in frequencies.most_common(top):
        table.add_row(tag, str(count), f"{count / max(captions, 1):.0%}")
    if len(frequencies) > top:
        table.caption = f"{len(frequencies) - top} more tags not shown"
    return table
