"""The persistent job queue: every heavy step is a `lorakit …` command run by the worker.

A job is the argv of a `lorakit` command plus what the UI needs to show it (the run
folder, total steps). States: queued → running → done | failed | stopped; a running job
whose worker process is gone becomes `interrupted` (never "running" forever, never lost);
a queued job can be cancelled. Processes are identified by pid *and* start time, so a
recycled pid is not mistaken for our worker.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.ui.store import DataDir

ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "stopped", "interrupted", "cancelled")
RESUMABLE = ("stopped", "interrupted", "failed")
LABELS = {"interrupted": "interrupted — resume", "stopped": "stopped — resume"}


def process_start(pid: int | None) -> str | None:
    """The process's start time (clock ticks since boot) from /proc; None when the process
    is gone or a zombie. Elsewhere than Linux: "alive" if signal 0 reaches it."""
    if not pid:
        return None
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] == "Z" else fields[19]
    try:
        os.kill(pid, 0)
    except OSError:
        return None
    return "alive"


def is_alive(pid: int | None, start: str | None) -> bool:
    return pid is not None and start is not None and process_start(pid) == start


@dataclass(frozen=True)
class Job:
    id: int
    project_id: int | None
    kind: str
    argv: list[str]
    info: dict[str, Any]
    state: str
    pid: int | None
    pid_start: str | None
    worker_pid: int | None
    worker_start: str | None
    stop_requested: bool
    exit_code: int | None
    message: str | None
    created: float
    started: float | None
    finished: float | None

    @property
    def label(self) -> str:
        return LABELS.get(self.state, self.state)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def slot(self) -> str:
        """Jobs of one slot in one project exclude each other (one training at a time)."""
        return str(self.info.get("slot", self.kind))

    @classmethod
    def from_row(cls, row: Any) -> Job:
        data = dict(row)
        data["argv"] = json.loads(data["argv"])
        data["info"] = json.loads(data["info"])
        data["stop_requested"] = bool(data["stop_requested"])
        return cls(**data)


class JobStore:
    def __init__(self, data: DataDir):
        self.data = data

    def log_path(self, job_id: int) -> Path:
        return self.data.jobs / f"{job_id}.log"

    def out_path(self, job_id: int) -> Path:
        return self.data.jobs / f"{job_id}.out"

    def get(self, job_id: int) -> Job:
        with self.data.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LorakitError(f"job #{job_id} does not exist; pick one from the jobs page")
        return Job.from_row(row)

    def list(self, project_id: int | None = None, limit: int = 200) -> list[Job]:
        with self.data.connect() as db:
            if project_id is None:
                rows = db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
            else:
                rows = db.execute(
                    "SELECT * FROM jobs WHERE project_id = ? ORDER BY id DESC LIMIT ?",
                    (project_id, limit),
                )
            return [Job.from_row(r) for r in rows.fetchall()]

    def latest(self, project_id: int, slot: str) -> Job | None:
        return next((j for j in self.list(project_id) if j.slot == slot), None)

    def submit(
        self, project_id: int | None, kind: str, argv: list[str], info: dict[str, Any]
    ) -> Job:
        """Queue a job; refused while a job of the same slot is queued or running, so a
        double click (or a second tab) cannot start the same run twice."""
        info = {"slot": kind, **info}
        with self.data.connect() as db:
            self._refuse_active(db, project_id, info["slot"])
            cursor = db.execute(
                "INSERT INTO jobs (project_id, kind, argv, info, state, created) "
                "VALUES (?, ?, ?, ?, 'queued', ?)",
                (project_id, kind, json.dumps(argv), json.dumps(info), time.time()),
            )
            job_id = int(cursor.lastrowid or 0)
        return self.get(job_id)

    def refuse_active(self, project_id: int | None, slot: str) -> None:
        """One line when a job of `slot` is queued or running for the project (checked again
        inside `submit`; callers use this to answer that before any other check)."""
        with self.data.connect() as db:
            self._refuse_active(db, project_id, slot)

    @staticmethod
    def _refuse_active(db: Any, project_id: int | None, slot: str) -> None:
        for row in db.execute(
            "SELECT * FROM jobs WHERE project_id IS ? AND state IN (?, ?)",
            (project_id, *ACTIVE),
        ).fetchall():
            other = Job.from_row(row)
            if other.slot == slot:
                raise LorakitError(
                    f"job #{other.id} ({other.kind}) is already {other.state} for this "
                    "project; wait for it or stop it first"
                )

    def claim_next(self, worker_pid: int) -> Job | None:
        """The oldest queued job, now running under this worker."""
        start = process_start(worker_pid)
        with self.data.connect() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', worker_pid = ?, worker_start = ?, "
                "started = ? WHERE id = ?",
                (worker_pid, start, time.time(), row["id"]),
            )
        return self.get(row["id"])

    def set_process(self, job_id: int, pid: int) -> None:
        with self.data.connect() as db:
            db.execute(
                "UPDATE jobs SET pid = ?, pid_start = ? WHERE id = ?",
                (pid, process_start(pid), job_id),
            )

    def finish(self, job_id: int, state: str, exit_code: int | None, message: str | None) -> None:
        with self.data.connect() as db:
            db.execute(
                "UPDATE jobs SET state = ?, exit_code = ?, message = ?, finished = ? "
                "WHERE id = ? AND state = 'running'",
                (state, exit_code, message, time.time(), job_id),
            )

    def request_stop(self, job_id: int) -> Job:
        """Cancel a queued job; ask the worker to stop a running one (it sends Ctrl-C, and
        `lorakit train` saves its state for a resume)."""
        job = self.get(job_id)
        with self.data.connect() as db:
            if job.state == "queued":
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ?",
                    (time.time(), job_id),
                )
            elif job.state == "running":
                db.execute("UPDATE jobs SET stop_requested = 1 WHERE id = ?", (job_id,))
            else:
                raise LorakitError(f"job #{job_id} is {job.label}, not running; nothing to stop")
        return self.get(job_id)

    def stop_requested(self, job_id: int) -> bool:
        return self.get(job_id).stop_requested

    def reconcile(self) -> list[int]:
        """Mark running jobs whose worker is gone as interrupted (and end their command if
        it outlived the worker); returns their ids."""
        lost = []
        for job in self.list():
            if job.state != "running" or is_alive(job.worker_pid, job.worker_start):
                continue
            if job.pid and is_alive(job.pid, job.pid_start):
                os.kill(job.pid, signal.SIGKILL)
            with self.data.connect() as db:
                db.execute(
                    "UPDATE jobs SET state = 'interrupted', finished = ?, message = ? "
                    "WHERE id = ? AND state = 'running'",
                    (time.time(), "the worker process ended while this job ran", job.id),
                )
            lost.append(job.id)
        return lost
