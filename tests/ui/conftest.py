"""Fixtures for the web UI: a real `lorakit ui` server process and a headless Chromium that
refuses (and records) every request leaving the machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from lorakit.ui.jobs import JobStore, is_alive, process_start
from lorakit.ui.store import DataDir

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; without one the browser tests skip, except under CI=true."""
    path = find_chromium()
    missing = None
    if path is None:
        missing = "no chromium found (Debian: apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ModuleNotFoundError:
            missing = "playwright is not installed (pip install 'lorakit[dev]')"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {missing}: the UI browser tests must run in CI")
        pytest.skip(f"{missing}; UI browser tests skipped")
    assert path is not None
    return path


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> JobStore:
        return JobStore(DataDir(self.data_dir))

    def worker_pid(self) -> int | None:
        text = (self.data_dir / "worker.lock").read_text().strip()
        return int(text) if text.isdigit() else None

    def stop(self) -> None:
        """End the server, then a worker still busy with a job (its command dies with it)."""
        worker = self.worker_pid() if (self.data_dir / "worker.lock").exists() else None
        start = process_start(worker)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if worker is not None and is_alive(worker, start):
            os.kill(worker, signal.SIGKILL)


def start_server(roots: list[Path], data_dir: Path, *extra: str) -> Server:
    argv = [sys.executable, "-m", "lorakit", "ui", "--port", "0", "--data-dir", str(data_dir)]
    for root in roots:
        argv += ["--root", str(root)]
    process = subprocess.Popen(
        [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "open http" not in line:
        process.kill()
        raise AssertionError(f"lorakit ui did not start: {line}{process.stderr.read()}")
    return Server(url=line.split("open ", 1)[1].strip(), data_dir=data_dir, process=process)


@pytest.fixture
def ui_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


@pytest.fixture
def server(ui_root: Path, tmp_path: Path) -> Iterator[Server]:
    from lorakit.models.components import TINY_BASE_DIR

    running = start_server([ui_root, TINY_BASE_DIR], tmp_path / "ui-data")
    yield running
    running.stop()


@dataclass
class Browser:
    page: Any
    context: Any
    outside: list[str]
    errors: list[str]

    def shot(self, name: str, page: Any = None) -> Path:
        """A full-page screenshot as a test artefact (test-artifacts/ui/NAME.png)."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{name}.png"
        (page or self.page).screenshot(path=str(target), full_page=True)
        return target


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    errors: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = launched.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", guard)
        context.set_default_timeout(20_000)
        context.on("weberror", lambda error: errors.append(str(error.error)))
        yield Browser(context.new_page(), context, outside, errors)
        launched.close()
    assert outside == [], f"the UI made requests that leave the machine: {outside}"
    assert errors == [], f"JavaScript errors on the pages: {errors}"


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
