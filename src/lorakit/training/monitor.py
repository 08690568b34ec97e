"""What the user watches: the settings table, a rich progress bar and TensorBoard.

Scalars: `loss/current` and `loss/average` (every `log_every_n_steps`), `loss/epoch`,
`loss/validation` (per epoch), `lr/unet`, `lr/text_encoder` (per logged step). Only the
main process writes; the others get a monitor that does nothing, so the loop never asks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text


class FieldColumn(ProgressColumn):
    """`label value` from a task field; empty for tasks without it (e.g. latent caching)."""

    def __init__(self, field: str, template: str):
        super().__init__()
        self.field, self.template = field, template

    def render(self, task: Task) -> Text:
        value = task.fields.get(self.field)
        return Text(self.template.format(value) if value is not None else "")


class Monitor:
    """Progress bar + TensorBoard writer for the main process."""

    def __init__(self, log_dir: Path, total_steps: int, start_step: int, enabled: bool = True):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.writer = None
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            FieldColumn("loss", "loss {}"),
            FieldColumn("speed", "{} it/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task(
            "epoch 1", total=total_steps, completed=start_step, loss="-", speed="-"
        )
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(log_dir))

    def __enter__(self) -> Monitor:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()
        if self.writer is not None:
            self.writer.close()

    def settings(self, rows: Iterable[tuple[str, Any]]) -> None:
        if not self.enabled:
            return
        table = Table(title="lorakit train", show_header=False)
        for key, value in rows:
            table.add_row(key, str(value))
        self.console.print(table)

    def print(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message)

    def epoch(self, epoch: int, epochs: int) -> None:
        self.progress.update(self.task, description=f"epoch {epoch}/{epochs}")

    def advance(self, steps: int = 1) -> None:
        self.progress.advance(self.task, steps)

    def step(self, step: int, current: float, average: float, lrs: dict[str, float]) -> None:
        speed = self.progress.tasks[0].speed
        self.progress.update(
            self.task, loss=f"{average:.4f}", speed=f"{speed:.2f}" if speed else "-"
        )
        lr_values = {f"lr/{name}": value for name, value in lrs.items()}
        self.scalars({"loss/current": current, "loss/average": average, **lr_values}, step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Write `values` at `step` and flush once, so TensorBoard shows them at once."""
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()
