"""The UI's own data folder: one SQLite database (projects, jobs) and the files around it.

SQLite because the web server and the worker are separate processes that must agree on
the job queue after either of them was killed: every change is one short transaction,
and WAL mode lets the server read while the worker writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    project_id INTEGER,
    kind TEXT NOT NULL,
    argv TEXT NOT NULL,
    info TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    pid INTEGER,
    pid_start TEXT,
    worker_pid INTEGER,
    worker_start TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    message TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
"""


class DataDir:
    """Where the UI keeps its database, job logs, thumbnails and project work folders."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        for folder in (self.root, self.jobs, self.thumbs, self.projects):
            folder.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.database, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        finally:
            db.close()

    @property
    def database(self) -> Path:
        return self.root / "ui.sqlite3"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    @property
    def projects(self) -> Path:
        return self.root / "projects"

    @property
    def worker_lock(self) -> Path:
        return self.root / "worker.lock"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection whose `with` block is one transaction (committed on success)."""
        db = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()
