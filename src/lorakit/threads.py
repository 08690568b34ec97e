"""How many CPU threads torch uses, and why: one rule for training, the demo and the bench.

A small model's tensors are too small to split across threads: a second thread only adds
waiting at every operation. On an idle 2-core machine the tiny model trains 1.7× slower
with both threads than with one (9× on a busy one), so models below
`SMALL_MODEL_PARAMETERS` U-Net parameters get one thread. Full-size U-Nets (SD1.5 has
860M parameters) keep torch's default of one thread per core, where the large matrix
products do split. `training.cpu_threads` or `OMP_NUM_THREADS` override the rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

SMALL_MODEL_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class ThreadChoice:
    """`count` threads to set (None: keep torch's), and why, for the settings table."""

    count: int | None
    why: str
    known: bool = True
    """False before the model is loaded (a dry run): `why` is then the rule."""

    def describe(self) -> str:
        """`1 (why)` with the count torch will run on, or the rule alone."""
        if not self.known:
            return self.why
        import torch

        return f"{self.count or torch.get_num_threads()} ({self.why})"


def choose_threads(configured: int | None, parameters: int | None) -> ThreadChoice:
    """The thread count for a CPU run of a U-Net with `parameters` (None: not loaded yet)."""
    if configured:
        return ThreadChoice(configured, "training.cpu_threads")
    if os.environ.get("OMP_NUM_THREADS"):
        return ThreadChoice(None, "OMP_NUM_THREADS")
    limit = f"{SMALL_MODEL_PARAMETERS // 1_000_000}M"
    if parameters is None:
        rule = f"1 for a U-Net under {limit} parameters, else one per core (set when it loads)"
        return ThreadChoice(None, rule, known=False)
    size = f"{parameters / 1e6:.1f}M-parameter U-Net"
    if parameters < SMALL_MODEL_PARAMETERS:
        return ThreadChoice(1, f"{size}: one thread is fastest below {limit}")
    return ThreadChoice(None, f"{size}: one thread per core")


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run torch on `count` threads (None: leave them), then restore the setting."""
    import torch

    threads = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
