"""Lint findings: what is wrong with one file (or the whole set), how bad, and the fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """One lint result. `path` is None for findings about the whole dataset."""

    rule: str
    severity: Severity
    path: Path | None
    message: str
    fix: str

    def to_dict(self) -> dict[str, str | None]:
        data = asdict(self)
        data["severity"] = self.severity.value
        data["path"] = None if self.path is None else str(self.path)
        return data
