"""`python -m lorakit.ui.worker DATA_DIR`: run queued jobs one at a time, apart from the web server.

Each job is `python -m lorakit <argv>`: the same code and speed as on the command line.
Its stdout and stderr go to files beside the database, where the UI reads progress and
the log. A lock file makes the worker unique per data folder. The command dies with the
worker (Linux's parent-death signal), so a killed worker leaves no orphan training that
a new worker would race; the job shows as interrupted and resumes from its saved state.
The worker leaves when it is idle and the server that started it is gone.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from lorakit.ui.jobs import Job, JobStore
from lorakit.ui.store import DataDir

POLL = 0.2
PR_SET_PDEATHSIG = 1


def hold_lock(path: Path) -> IO[str] | None:
    """The open, exclusively locked lock file; None when another worker holds it."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def lock_is_held(path: Path) -> bool:
    handle = hold_lock(path)
    if handle is None:
        return True
    handle.close()
    return False


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the worker dies (Linux only)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def last_error(log: Path) -> str | None:
    """The command's one-line error (`lorakit: error: …`), else its last stderr line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    errors = [ln.removeprefix("lorakit: error: ") for ln in lines if "error:" in ln]
    return (errors or lines or [None])[-1]


def run_job(store: JobStore, job: Job) -> None:
    log, out = store.log_path(job.id), store.out_path(job.id)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cwd = job.info.get("cwd") or None
    with log.open("ab") as err, out.open("wb") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "lorakit", *job.argv],
            stdout=stdout,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            preexec_fn=_die_with_parent,
        )
        store.set_process(job.id, process.pid)
        interrupted = False
        while process.poll() is None:
            if not interrupted and store.stop_requested(job.id):
                process.send_signal(signal.SIGINT)
                interrupted = True
            time.sleep(POLL)
    code = process.returncode
    ok_codes = job.info.get("ok_codes", [0])
    if code in ok_codes:
        state, message = "done", None
    elif interrupted:
        state, message = "stopped", "stopped on request; state saved for a resume"
    else:
        state, message = "failed", last_error(log) or f"exit status {code}"
    store.finish(job.id, state, code, message)


def serve(data: DataDir, parent: int | None) -> int:
    lock = hold_lock(data.worker_lock)
    if lock is None:
        return 0
    store = JobStore(data)
    store.reconcile()
    me = os.getpid()
    with lock:
        lock.seek(0)
        lock.truncate()
        lock.write(f"{me}\n")
        lock.flush()
        while True:
            job = store.claim_next(me)
            if job is not None:
                run_job(store, job)
                continue
            if parent is not None and os.getppid() != parent:
                return 0
            time.sleep(POLL)


def main() -> int:
    parser = argparse.ArgumentParser(description="lorakit ui job worker")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--parent", type=int, help="leave when idle once this pid is gone")
    args = parser.parse_args()
    return serve(DataDir(args.data_dir), args.parent)


if __name__ == "__main__":
    sys.exit(main())
