"""Keeps one worker process alive beside the web server.

Twice a second: when no worker holds the data folder's lock, jobs it was running are
marked interrupted and a new worker starts. The worker runs in its own session, so Ctrl-C
in the server's terminal does not stop a training run; a worker left over from a server
that was killed keeps its lock and is adopted, not duplicated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from lorakit.ui.jobs import JobStore
from lorakit.ui.store import DataDir
from lorakit.ui.worker import lock_is_held

INTERVAL = 0.5


class Supervisor:
    def __init__(self, data: DataDir):
        self.data = data
        self.jobs = JobStore(data)
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lorakit-ui-worker", daemon=True)

    def start(self) -> None:
        self.ensure_worker()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def worker_pid(self) -> int | None:
        try:
            text = self.data.worker_lock.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and lock_is_held(self.data.worker_lock) else None

    def ensure_worker(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return  # ours, still starting or running
        if lock_is_held(self.data.worker_lock):
            return  # one left by an earlier server: adopt it
        self.jobs.reconcile()
        worker = [sys.executable, "-m", "lorakit.ui.worker", str(self.data.root)]
        self.process = subprocess.Popen(
            [*worker, "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.ensure_worker()
