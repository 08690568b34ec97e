"""A progress bar for per-image loops that never pollutes stdout (lint --json prints there)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from lorakit.progress import task

T = TypeVar("T")


def track(items: Sequence[T], description: str) -> Iterator[T]:
    """Iterate with a transient bar on stderr; off a terminal, a line every 30 s of a slow
    loop (none for a quick one). A sequence, so the bar knows its length."""
    with task(description, total=len(items)) as advance:
        for item in items:
            yield item
            advance()
