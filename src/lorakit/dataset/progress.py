"""A progress bar for per-image loops that never pollutes stdout (lint --json prints there)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import track as rich_track

T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a transient rich bar on stderr; silent when stderr is not a terminal."""
    console = Console(stderr=True)
    yield from rich_track(
        items,
        description=description,
        total=total,
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
