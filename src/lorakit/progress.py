"""Progress on stderr for every slow phase: rich bars on a terminal, plain lines in a log.

Caching, validation, sampling and hashing can each take minutes on a CPU, so each shows a
task. On a terminal rich redraws the bars in place. When stderr is a file or a pipe
(`lorakit train run.toml 2> log`, a rented GPU's log viewer) redraws would be lost, so a
task prints a plain line instead: every `interval` seconds, and on a board with `marks`
(a training run's) at every tenth of its total too. Speed reads `it/s`, or `s/it` below
one item a second, counted from the task's start: rich's own estimate looks back 30
seconds only and stays empty once a single step takes longer.

Code deep inside a phase (latent caching, the base-model hash) opens its task with
`task()`: it joins the board that is showing, or, when none is, gets a transient one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

Clock = Callable[[], float]
LINE_INTERVAL = 30.0
MARKS = 10

_SHOWING: list[Board] = []


def stdout_is_terminal() -> bool:
    """Whether results are read by a person (tables) or a file or a pipe (plain lines)."""
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def rate(done: float, seconds: float | None, unit: str = "it") -> str:
    """`3.21 it/s`, or `12.4 s/it` below one a second; `-` until something is done."""
    if not seconds or done <= 0:
        return "-"
    per_second = done / seconds
    if per_second >= 1:
        return f"{per_second:.2f} {unit}/s"
    return f"{seconds / done:.1f} s/{unit}"


def duration(seconds: float) -> str:
    """`0:07`, `12:30`, `1:02:03`."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _done(task: Task) -> float:
    """Items done since the task started (a resumed run starts part-way)."""
    return task.completed - task.fields.get("initial", 0)


def task_rate(task: Task) -> str:
    return rate(_done(task), task.elapsed, task.fields.get("unit", "it"))


def remaining(task: Task) -> float | None:
    """Seconds left at the task's average pace so far; None before the first item."""
    done, elapsed = _done(task), task.elapsed
    if task.total is None or not elapsed or done <= 0:
        return None
    return max(0.0, task.total - task.completed) * elapsed / done


def line(task: Task) -> str:
    """`epoch 2/10: 120/400 (30%), loss 0.1234, 2.3 s/it, elapsed 4:37, ETA 10:44`."""
    unit = task.fields.get("unit", "it")
    count = f"{task.completed:.0f}"
    if task.total:
        count += f"/{task.total:.0f}"
    parts = [f"{task.description}: {count}" + ("" if unit == "it" else f" {unit}")]
    if task.total:
        parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
    loss = task.fields.get("loss")
    if loss not in (None, "-"):
        parts.append(f"loss {loss}")
    parts += [task_rate(task), f"elapsed {duration(task.elapsed or 0.0)}"]
    left = remaining(task)
    if left is not None and not task.finished:
        parts.append(f"ETA {duration(left)}")
    return ", ".join(parts)


class FieldColumn(ProgressColumn):
    """`label value` from a task field; empty for tasks without it (e.g. latent caching)."""

    def __init__(self, field: str, template: str):
        super().__init__()
        self.field, self.template = field, template

    def render(self, task: Task) -> Text:
        value = task.fields.get(self.field)
        return Text(self.template.format(value) if value is not None else "")


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(task_rate(task))


class RemainingColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        left = remaining(task)
        return Text("" if left is None or task.finished else f"ETA {duration(left)}")


@dataclass
class _Printed:
    """What the last plain line of a task showed, to tell when the next one is due."""

    at: float
    mark: int
    completed: float
    lines: int = 0


class Board(Progress):
    """A rich `Progress` that prints plain lines instead of a live display off a terminal.

    Being a `Progress`, it goes wherever one is expected (generation's denoising steps add
    their task to it). `enabled=False` (the non-main processes of a multi-GPU run) shows
    nothing; `live` overrides what the console says about being a terminal.
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        live: bool | None = None,
        enabled: bool = True,
        marks: int = MARKS,
        interval: float = LINE_INTERVAL,
        clock: Clock = time.monotonic,
        transient: bool = False,
    ):
        console = console or Console(stderr=True)
        live = console.is_terminal if live is None else live
        self.enabled = enabled
        self.plain = enabled and not live
        self.marks, self.interval = marks, interval
        self._printed: dict[TaskID, _Printed] = {}
        super().__init__(
            TextColumn("{task.description}", style="bold", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            FieldColumn("loss", "loss {}"),
            RateColumn(),
            TimeElapsedColumn(),
            RemainingColumn(),
            console=console,
            get_time=clock,
            disable=not enabled or self.plain,
            transient=transient,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def start(self) -> None:
        super().start()
        _SHOWING.append(self)

    def stop(self) -> None:
        super().stop()
        if self in _SHOWING:
            _SHOWING.remove(self)

    def add_task(
        self,
        description: str,
        start: bool = True,
        total: float | None = 100.0,
        completed: int = 0,
        visible: bool = True,
        **fields: Any,
    ) -> TaskID:
        fields.setdefault("initial", completed)
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        task = self._tasks[task_id]
        self._printed[task_id] = _Printed(self.get_time(), self._mark(task), task.completed)
        return task_id

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def update(self, task_id: TaskID, **changes: Any) -> None:  # type: ignore[override]
        super().update(task_id, **changes)
        self._report(task_id)

    def remove_task(self, task_id: TaskID) -> None:
        """Drop a finished phase; a plain log gets its closing line if it had any."""
        printed = self._printed.pop(task_id, None)
        task = self._tasks[task_id]
        if self.plain and printed and printed.lines and task.completed > printed.completed:
            self._write(line(task))
        super().remove_task(task_id)

    def _mark(self, task: Task) -> int:
        return int(self.marks * task.completed / task.total) if task.total else 0

    def _report(self, task_id: TaskID) -> None:
        """Print the task's line when another interval passed or another tenth is done."""
        printed = self._printed.get(task_id)
        task = self._tasks[task_id]
        if not self.plain or printed is None or task.completed <= printed.completed:
            return
        now, mark = self.get_time(), self._mark(task)
        if now - printed.at >= self.interval or (self.marks and mark > printed.mark):
            self._write(line(task))
            self._printed[task_id] = _Printed(now, mark, task.completed, printed.lines + 1)

    def _write(self, text: str) -> None:
        print(text, file=self.console.file, flush=True)

    def note(self, message: str) -> None:
        """A diagnostic on stderr, drawn above the bars when they are live."""
        if self.enabled:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def result(self, renderable: RenderableType) -> None:
        """A result on stdout; on a terminal that also shows the live bars it is drawn
        above them (printing past rich would tear the display)."""
        if not self.enabled:
            return
        if stdout_is_terminal() and self.live.is_started:
            self.console.print(renderable, markup=False, highlight=False)
        elif isinstance(renderable, str):
            print(renderable, flush=True)
        else:
            Console(file=sys.stdout).print(renderable)


@contextmanager
def shown() -> Iterator[Board]:
    """The board that is showing, or a transient one that prints lines only when slow."""
    if _SHOWING:
        yield _SHOWING[-1]
        return
    with Board(marks=0, transient=True) as board:
        yield board


@contextmanager
def task(description: str, total: float, unit: str = "it") -> Iterator[Callable[..., None]]:
    """A task for one phase; yields its `advance(n=1)`. It disappears when the phase ends."""
    with shown() as board:
        task_id = board.add_task(description, total=total, unit=unit)
        try:
            yield partial(board.advance, task_id)
        finally:
            board.remove_task(task_id)


T = TypeVar("T")


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a transient bar on stderr (stdout stays clean for `--json` output); off
    a terminal, a line every 30 s of a slow loop (none for a quick one). A sequence, so the
    bar knows its length."""
    with task(description, total=len(items)) as advance:
        for item in items:
            yield item
            advance()
