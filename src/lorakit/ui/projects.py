"""Projects: a source folder of photos (never written to) and a work folder the UI owns.

The work folder holds everything derived: `curated/` (the source minus excluded photos,
copied, so prep reads exactly what the user kept), `run/` (what `lorakit dataset prep`
writes and captions are edited in), `out/` (the training run), `train.toml`, `lint.json`
and `generated/`. Excluding a photo only records its name.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.ui.store import DataDir


@dataclass
class Project:
    id: int
    name: str
    source: Path
    work: Path
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def excluded(self) -> set[str]:
        return set(self.settings.get("excluded", []))

    @property
    def curated(self) -> Path:
        return self.work / "curated"

    @property
    def run(self) -> Path:
        return self.work / "run"

    @property
    def out(self) -> Path:
        return self.work / "out"

    @property
    def generated(self) -> Path:
        return self.work / "generated"

    @property
    def config_path(self) -> Path:
        return self.work / "train.toml"

    @property
    def lint_path(self) -> Path:
        return self.work / "lint.json"

    @property
    def prepared(self) -> bool:
        return (self.run / "img").is_dir()

    @property
    def trigger(self) -> str:
        return str(self.settings.get("prep", {}).get("trigger", ""))

    @property
    def lora_name(self) -> str:
        return self.trigger or "lora"


class Projects:
    def __init__(self, data: DataDir):
        self.data = data

    def _from_row(self, row: Any) -> Project:
        return Project(
            id=row["id"],
            name=row["name"],
            source=Path(row["source"]),
            work=self.data.projects / str(row["id"]),
            settings=json.loads(row["settings"]),
        )

    def create(self, name: str, source: Path | None) -> Project:
        """A project over `source`, or over its own `photos/` folder (uploads) when None."""
        name = name.strip() or (source.name if source else "photos")
        with self.data.connect() as db:
            cursor = db.execute(
                "INSERT INTO projects (name, source, created) VALUES (?, ?, ?)",
                (name, str(source or ""), time.time()),
            )
            project_id = int(cursor.lastrowid or 0)
            if source is None:
                source = self.data.projects / str(project_id) / "photos"
                db.execute("UPDATE projects SET source = ? WHERE id = ?", (str(source), project_id))
        project = self.get(project_id)
        project.work.mkdir(parents=True, exist_ok=True)
        return project

    def get(self, project_id: int) -> Project:
        with self.data.connect() as db:
            row = db.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()
        if row is None:
            raise LorakitError(f"project #{project_id} does not exist; pick one from the list")
        return self._from_row(row)

    def all(self) -> list[Project]:
        with self.data.connect() as db:
            rows = db.execute("SELECT * FROM projects ORDER BY id DESC").fetchall()
        return [self._from_row(r) for r in rows]

    def update(self, project: Project, **changes: Any) -> Project:
        """Merge `changes` into the project's settings (one transaction)."""
        with self.data.connect() as db:
            row = db.execute("SELECT settings FROM projects WHERE id = ?", (project.id,)).fetchone()
            settings = json.loads(row["settings"]) | changes
            db.execute(
                "UPDATE projects SET settings = ? WHERE id = ?",
                (json.dumps(settings), project.id),
            )
        return self.get(project.id)

    def set_excluded(self, project: Project, name: str, excluded: bool) -> Project:
        names = project.excluded
        if excluded:
            names.add(name)
        else:
            names.discard(name)
        return self.update(project, excluded=sorted(names))


def write_curated(
    project: Project, image_names: list[str], caption_ext: str, curated: Path
) -> Path:
    """Copy the kept photos (and their captions) into the new folder `curated`."""
    curated.mkdir(parents=True)
    for name in image_names:
        if name in project.excluded:
            continue
        image = project.source / name
        shutil.copy2(image, curated / image.name)
        caption = image.with_suffix(caption_ext)
        if caption.is_file():
            shutil.copy2(caption, curated / caption.name)
    return curated


def save_lint(project: Project, report: dict[str, Any]) -> None:
    atomic_write_text(project.lint_path, json.dumps(report, indent=1))


def load_lint(project: Project) -> dict[str, Any] | None:
    try:
        return json.loads(project.lint_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
