"""The whole job in a real headless Chromium: photos → lint → exclude → caption → train →
kill the worker → resume → grid → pick (a job) → generate, against a real `lorakit ui` server."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
from pathlib import Path

import pytest

from lorakit.demo_photos import write_sample_photos
from lorakit.models.components import TINY_BASE_DIR
from lorakit.ui.jobs import process_start
from tests.ui.conftest import Browser, Server, wait_for

pytestmark = pytest.mark.slow


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def card(page, name: str):
    return page.locator(f'figure.card[data-name="{name}"]')


def open_stage(page, link: str) -> None:
    """Follow a stage link and wait until ui.js ran: htmx (loaded before it) has bound the
    page's hx-* elements by then, so a click is never lost on a half-initialised page."""
    page.get_by_role("link", name=link).click()
    page.locator("body[data-ready]").wait_for()


def check_dataset(b: Browser, photos: Path) -> None:
    page = b.page
    page.get_by_text("checking the photos").wait_for(state="detached", timeout=60_000)
    planted = {
        "blurry.png": "blurry",
        "thumbnail.png": "too-small",
        "robot_003 copy.png": "exact-duplicate",
        "selfie_mirror.png": "mirrored-pair",
    }
    for name, rule in planted.items():
        card(page, name).locator(f'.badge[data-rule="{rule}"]').first.wait_for()
    assert card(page, "thumbnail.png").locator(".badge.sev-error").count() == 1
    assert card(page, "robot_010.png").locator(".badge.sev-error").count() == 0
    page.locator('.filters a[data-rule="blurry"]').click()
    page.wait_for_url(re.compile(r"rule=blurry"))
    assert page.locator("figure.card").count() == 1
    page.goto(page.url.split("?")[0])
    before = tree_digest(photos)
    card(page, "thumbnail.png").get_by_role("button", name="Exclude").click()
    card(page, "thumbnail.png").get_by_text("excluded (the file is untouched)").wait_for()
    assert tree_digest(photos) == before


def prep_and_caption(b: Browser, run: Path) -> None:
    page = b.page
    page.fill('#prep-form input[name="repeats"]', "1")
    page.fill('#prep-form input[name="epochs"]', "2")
    page.locator("#plan").get_by_text("= 27 steps per epoch").wait_for()
    page.fill('#prep-form input[name="trigger"]', "zkz")
    page.fill('#prep-form input[name="class_name"]', "robot")
    page.get_by_role("button", name="Prep the kept photos").click()
    page.locator("#prep-msg").get_by_text("prepared 27 images").wait_for()
    b.shot("2-dataset")
    open_stage(page, "2 Captions")
    name = page.locator("#caption-name").inner_text()
    page.fill("#caption-text", "zkz, robot, edited in the browser")
    page.keyboard.press("Control+Enter")
    page.locator("#caption-msg").get_by_text("saved").wait_for()
    caption = (run / name).with_suffix(".txt")
    assert caption.read_text(encoding="utf-8") == "zkz, robot, edited in the browser\n"
    page.keyboard.press("Alt+ArrowRight")
    page.wait_for_url(re.compile(r"i=1"))
    b.shot("3-captions")


SETTINGS = {
    "model.path": str(TINY_BASE_DIR),
    "dataset.resolution": "64",
    "network.rank": "4",
    "network.alpha": "4",
    "optimizer.name": "adamw",
    "optimizer.unet_lr": "0.002",
    "training.epochs": "2",
    "training.batch_size": "4",
    "training.mixed_precision": "no",
    "training.log_every_n_steps": "1",
    "validation.split": "0.2",
    "validation.timesteps": "1",
}


def configure(b: Browser, prompts: Path) -> None:
    page = b.page
    open_stage(page, "3 Train")
    page.locator("summary", has_text="Advanced").click()
    for key, value in {**SETTINGS, "sampling.prompts": str(prompts)}.items():
        field = page.locator(f'[name="{key}"]')
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(value)
        else:
            field.fill(value)
    page.get_by_role("button", name="Check (dry run)").click()
    page.locator("#plan-lines").get_by_text("total steps:").wait_for()
    assert "lorakit train" in page.locator("#command").inner_text()
    assert "optimizer.name" not in page.locator("#toml").inner_text()
    assert 'name = "adamw"' in page.locator("#toml").inner_text()
    b.shot("4-train")


def wait_state(page, text: str, timeout: float) -> None:
    """Wait until the job page, re-rendered by the server after the job ended, shows `text`."""
    page.locator("#job-live[data-final]").wait_for(timeout=timeout * 1000)
    assert page.locator("#job-state").inner_text() == text


def train_kill_resume(b: Browser, server: Server, out: Path) -> None:
    page = b.page
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    assert page.locator("#p-step").inner_text() in ("0", "-")
    # Steps pace these two waits: a loaded 2-core machine takes seconds per step.
    page.wait_for_function("+document.getElementById('p-step').textContent > 0", timeout=60_000)
    page.wait_for_function(
        "+document.getElementById('live-chart').dataset.points > 1", timeout=60_000
    )
    assert page.locator("#live-chart canvas").count() == 1
    second = b.context.new_page()
    second.goto(page.url.rsplit("/jobs", 1)[0] + "/p/1/train")
    second.get_by_role("button", name="Start training").click()
    second.locator("#start-msg").get_by_text("is already running").wait_for()
    second.close()
    wait_for(lambda: (out / "state" / "complete").is_file(), 60, "the first saved state")
    job = server.jobs.get(job_id)
    assert job.state == "running" and not (out / "zkz.safetensors").exists()
    b.shot("5-job-running")
    os.kill(job.worker_pid, signal.SIGKILL)
    wait_state(page, "interrupted — resume", 30)
    assert process_start(job.pid) is None, "the training command outlived its worker"
    b.shot("6-job-interrupted")
    page.get_by_role("button", name="Resume").click()
    page.wait_for_url(re.compile(rf"/jobs/(?!{job_id}$)\d+$"))
    wait_state(page, "done", 120)
    summary = json.loads((out / "summary.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert page.locator("#samples img").count() >= 1
    b.shot("7-job-done")


def results(b: Browser) -> None:
    page = b.page
    open_stage(page, "4 Results")
    page.locator("#loss-chart canvas").wait_for()
    page.fill('input[name="steps"]', "3")
    page.get_by_role("button", name="Render the grid").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    wait_state(page, "done", 120)
    open_stage(page, "4 Results")
    page.locator("#grid-image").wait_for()
    page.get_by_role("button", name="Pick the best epoch").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    wait_state(page, "done", 120)
    open_stage(page, "4 Results")
    page.locator("#best-epoch").wait_for()
    assert page.locator("#decided-by").inner_text() in ("fidelity", "bleed")
    assert page.locator("#pick-signals tr").count() == 1 + 2  # header + one row per epoch
    b.shot("8-results")


def generate(b: Browser) -> None:
    page = b.page
    open_stage(page, "5 Generate")
    assert page.locator("#prompt").input_value() == "<lora:zkz:1> zkz robot"
    page.fill('input[name="steps"]', "4")
    page.fill('input[name="seed"]', "7")
    page.get_by_role("button", name="Generate").click()
    page.wait_for_url(re.compile(r"/jobs/\d+$"))
    wait_state(page, "done", 120)
    open_stage(page, "5 Generate")
    page.locator("#gallery img").first.click()
    text = page.locator("#parameters-text").inner_text()
    assert "Steps: 4" in text and "Seed: 7" in text and "Lora hashes" in text
    b.shot("9-generate")


def test_photos_to_generated_image(browser: Browser, server: Server, ui_root: Path) -> None:
    photos = write_sample_photos(ui_root / "photos")
    prompts = ui_root / "prompts.txt"
    prompts.write_text("zkz robot --w 64 --h 64 --s 3 --d 1\n", encoding="utf-8")
    page = browser.page
    page.goto(server.url)
    browser.shot("1-projects")
    page.fill("#folder-input", str(photos))
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/p/1/dataset$"))
    check_dataset(browser, photos)
    work = server.data_dir / "projects" / "1"
    prep_and_caption(browser, work / "run")
    configure(browser, prompts)
    train_kill_resume(browser, server, work / "out")
    results(browser)
    generate(browser)
    page.goto(server.url)
    assert page.locator('.card.project[data-project="1"] .state').inner_text() == "done"
    browser.shot("10-projects-done")
    page.goto(server.url + "jobs")
    browser.shot("11-jobs")
