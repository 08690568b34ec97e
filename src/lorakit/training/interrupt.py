"""Ctrl-C while training: finish the optimizer step in flight, then save and stop.

A KeyboardInterrupt raised wherever the signal lands would stop a step half-way: its
noise already drawn from the generators, its batch counted, its optimizer update not
made. The state saved then resumes to a different run. So the first SIGINT only sets a
flag that the loop reads between optimizer steps; a second one stops at once, without
saving (the last saved state stays as it was).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopRequested(Exception):
    """The loop reached a step boundary after a Ctrl-C."""


class StopFlag:
    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Route SIGINT to the flag (signals reach only the main thread; elsewhere no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
