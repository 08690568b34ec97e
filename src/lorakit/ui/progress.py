"""Live progress of a training job, read from what `lorakit train` writes anyway.

The trainer logs `loss/current` and `loss/average` to TensorBoard every
`log_every_n_steps` and flushes at once; each event carries its step and wall time. So the
UI tails the run's `logs/` event files (TFRecord framing, read incrementally and only up to
the last complete record) and derives step / total, loss, it/s and ETA from them, without
any hook in the trainer. A resumed run writes a new event file; speed is measured within
the newest one, so time spent before an interruption does not count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.progress import duration, rate

HEADER = struct.Struct("<QI")
LOSS_TAGS = ("loss/current", "loss/average")


@dataclass
class Point:
    step: int
    wall: float
    value: float


@dataclass
class _File:
    offset: int = 0
    points: dict[str, list[Point]] = field(default_factory=dict)


def _records(data: bytes) -> tuple[list[bytes], int]:
    """Complete TFRecord payloads in `data` and how many bytes they used."""
    records, pos = [], 0
    while pos + HEADER.size <= len(data):
        length, _ = HEADER.unpack_from(data, pos)
        end = pos + HEADER.size + length + 4
        if end > len(data):
            break
        records.append(data[pos + HEADER.size : end - 4])
        pos = end
    return records, pos


class EventTail:
    """Scalars of a run's TensorBoard files, re-reading only what was appended."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.files: dict[Path, _File] = {}

    def refresh(self) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        if not self.log_dir.is_dir():
            return
        for path in sorted(self.log_dir.glob("events.out.tfevents.*")):
            state = self.files.setdefault(path, _File())
            with path.open("rb") as handle:
                handle.seek(state.offset)
                data = handle.read()
            records, used = _records(data)
            state.offset += used
            for record in records:
                event = Event.FromString(record)
                for value in event.summary.value:
                    point = Point(int(event.step), float(event.wall_time), value.simple_value)
                    state.points.setdefault(value.tag, []).append(point)

    def series(self, tag: str) -> list[Point]:
        """One tag over every file, the newest value of a step winning (a resume repeats
        the steps after its last saved state)."""
        by_step: dict[int, Point] = {}
        for state in self.files.values():
            for point in state.points.get(tag, []):
                by_step[point.step] = point
        return [by_step[s] for s in sorted(by_step)]

    def newest(self, tag: str) -> list[Point]:
        """The tag's points in the newest event file that has any."""
        for path in sorted(self.files, reverse=True):
            points = self.files[path].points.get(tag)
            if points:
                return points
        return []


def speed(points: list[Point]) -> float | None:
    """Steps per second between the first and the last point of one session."""
    if len(points) < 2 or points[-1].wall <= points[0].wall:
        return None
    return (points[-1].step - points[0].step) / (points[-1].wall - points[0].wall)


def train_progress(tail: EventTail, total: int | None) -> dict[str, Any]:
    """step/total, percent, loss, it/s, ETA and the loss curve, ready for the page."""
    tail.refresh()
    current, average = (tail.series(tag) for tag in LOSS_TAGS)
    epochs = tail.series("loss/epoch")
    step = current[-1].step if current else 0
    session = tail.newest("loss/current")
    per_second = speed(session)
    left = (total - step) / per_second if per_second and total else None
    return {
        "step": step,
        "total": total,
        "percent": round(100 * step / total) if total else 0,
        "loss": f"{average[-1].value:.4f}" if average else "-",
        "rate": rate(per_second, 1.0) if per_second else "-",
        "eta": duration(left) if left is not None else "-",
        "epochs_done": len(epochs),
        "chart": [
            [p.step for p in current],
            [p.value for p in current],
            [p.value for p in average],
        ],
    }


def log_tail(log: Path, lines: int = 40) -> list[str]:
    """The last lines of a job's stderr; carriage-return redraws keep their last state."""
    try:
        with log.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 16384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    rows = [row.rsplit("\r", 1)[-1] for row in text.splitlines()]
    return [row for row in rows if row.strip()][-lines:]


def samples(out: Path) -> list[str]:
    """Sample images the run has written so far, oldest first (names under samples/)."""
    folder = out / "samples"
    if not folder.is_dir():
        return []
    return [p.name for p in sorted(folder.glob("*.png"), key=lambda p: (p.stat().st_mtime, p.name))]
