"""The run folder's files: epoch files, the last file, `summary.json`, the run's counters.

Every file is written atomically, so a run killed at any moment (even SIGKILL) leaves
only complete files behind: LoRA files via `LoRANetwork.save`, JSON and TOML via
`lorakit.fileio`; `state/` (for `--resume`) lives in `lorakit.training.state`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text

SUMMARY = "summary.json"
# The resume state folder, and the two names a state swap passes through (lorakit.training.state).
STATE = "state"
FRESH, OLD = ".state-new", ".state-old"


def epoch_file(out: Path, name: str, epoch: int) -> Path:
    return out / f"{name}-{epoch:06d}.safetensors"


def step_file(out: Path, name: str, step: int) -> Path:
    return out / f"{name}-step{step:08d}.safetensors"


def last_file(out: Path, name: str) -> Path:
    return out / f"{name}.safetensors"


def newest_file(out: Path, name: str) -> Path | None:
    """The most recently written epoch or step file of run `name` (None when there is none)."""
    pattern = rf"{re.escape(name)}-(\d{{6}}|step\d{{8}})\.safetensors"
    found = [p for p in out.glob("*.safetensors") if re.fullmatch(pattern, p.name)]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def prune(out: Path, name: str, keep_last: int | None) -> list[Path]:
    """Delete all but the newest `keep_last` epoch files and step files; returns the deleted."""
    if keep_last is None:
        return []
    removed = []
    for pattern in (
        rf"{re.escape(name)}-(\d{{6}})\.safetensors",
        rf"{re.escape(name)}-step(\d{{8}})\.safetensors",
    ):
        found = sorted(
            (int(m.group(1)), p) for p in out.iterdir() if (m := re.fullmatch(pattern, p.name))
        )
        for _, path in found[:-keep_last]:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class Progress:
    """Counters that must survive a resume: epoch, step, the per-epoch loss sums, and
    whether the run is finished (a resume of a finished run has nothing to do)."""

    def __init__(self) -> None:
        self.epoch = 1
        self.step = 0
        self.epoch_batches = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.finished = False

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def read_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise LorakitError(f"{path}: not valid JSON; delete it to start a new summary") from None


def record_epoch(out: Path, header: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Add or replace one epoch in `summary.json`, keeping keys other tools added."""
    summary = read_summary(out)
    summary.update(header)
    epochs = [e for e in summary.get("epochs", []) if e.get("epoch") != entry["epoch"]]
    epochs.append(entry)
    epochs.sort(key=lambda e: e["epoch"])
    summary["epochs"] = epochs
    summary["best_epoch"] = best_epoch(epochs)
    write_summary(out, summary)
    return summary


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write `summary.json` atomically; the trainer and `lorakit pick` both go through here."""
    path = Path(out) / SUMMARY
    atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
    return path


def best_epoch(epochs: list[dict[str, Any]]) -> int | None:
    """Lowest validation loss among epochs that were saved (train loss without validation)."""
    saved = [e for e in epochs if e.get("file")] or epochs
    key = "val_loss" if all(e.get("val_loss") is not None for e in saved) else "train_loss"
    scored = [e for e in saved if e.get(key) is not None]
    return min(scored, key=lambda e: e[key])["epoch"] if scored else None
