"""What the user watches: the settings, progress of every phase, results and TensorBoard.

Results go to stdout: the settings, one line per epoch (losses, the file saved) and where
the LoRA is at the end. Live progress (caching, steps, validation, sampling) and notes go
to stderr, as rich bars on a terminal or plain lines in a log (`lorakit.progress`).

Scalars: `loss/current` and `loss/average` (every `log_every_n_steps`), `loss/epoch`,
`loss/validation` (per epoch), `lr/unet`, `lr/text_encoder` (per logged step). Only the
main process writes; the others get a monitor that does nothing, so the loop never asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.progress import TaskID
from rich.table import Table

from lorakit.progress import Board, stdout_is_terminal


class Monitor:
    """Progress board + TensorBoard writer for the main process."""

    def __init__(
        self,
        log_dir: Path,
        total_steps: int,
        enabled: bool = True,
        purge_step: int | None = None,
    ):
        """`purge_step`: TensorBoard hides events logged from this step on by an earlier
        writer (a resumed run repeats the steps after its state was saved)."""
        self.enabled = enabled
        self.total_steps = total_steps
        self.board = Board(enabled=enabled)
        self.task: TaskID | None = None
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def __enter__(self) -> Monitor:
        self.board.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.board.stop()
        if self.writer is not None:
            self.writer.close()

    def settings(self, rows: Iterable[tuple[str, Any]]) -> None:
        """The resolved settings: a table on a terminal, `key: value` lines in a file."""
        rows = list(rows)
        if stdout_is_terminal():
            table = Table(title="lorakit train", show_header=False)
            for key, value in rows:
                table.add_row(key, str(value))
            self.board.result(table)
        else:
            for key, value in rows:
                self.board.result(f"{key}: {value}")

    def note(self, message: str) -> None:
        """A diagnostic (stderr)."""
        self.board.note(message)

    def result(self, message: str) -> None:
        """A result line (stdout)."""
        self.board.result(message)

    def begin(self, step: int) -> None:
        """Show the training task from `step` (a resumed run starts part-way)."""
        self.task = self.board.add_task("epoch 1", total=self.total_steps, completed=step, loss="-")

    def epoch(self, epoch: int, epochs: int) -> None:
        if self.task is not None:
            self.board.update(self.task, description=f"epoch {epoch}/{epochs}")

    def advance(self, steps: int = 1) -> None:
        if self.task is not None:
            self.board.advance(self.task, steps)

    def step(self, step: int, current: float, average: float, lrs: dict[str, float]) -> None:
        if self.task is not None:
            self.board.update(self.task, loss=f"{average:.4f}")
        lr_values = {f"lr/{name}": value for name, value in lrs.items()}
        self.scalars({"loss/current": current, "loss/average": average, **lr_values}, step)

    def finished(self, lora: Path | None, steps: int, epochs: int, summary: Path) -> None:
        """Where the run's LoRA is, as the last result line."""
        where = f"LoRA: {lora}" if lora else "no LoRA file was saved"
        self.result(f"{where} (step {steps}, epoch {epochs}); losses per epoch: {summary}")

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write `values` at `step` and flush once, so TensorBoard shows them at once."""
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
