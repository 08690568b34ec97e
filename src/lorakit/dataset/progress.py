"""A progress bar for per-image loops that never pollutes stdout (lint --json prints there)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a transient rich bar on stderr; silent when stderr is not a terminal.
    A sequence, so the bar knows its length."""
    console = Console(stderr=True)
    yield from rich_track(
        items,
        description=description,
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
