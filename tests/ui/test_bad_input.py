"""Bad input through the UI: an inline one-line message, and every file left as it was."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from tests.ui.conftest import Browser, Server
from tests.ui.test_e2e import tree_digest


def write_photos(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        pixels = rng.integers(0, 256, (320, 288, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i}.png")
    return folder


def snapshot(*folders: Path) -> list[dict[str, str]]:
    return [tree_digest(folder) for folder in folders]


def upload(b: Browser, files: list[dict]) -> str:
    page = b.page
    page.set_input_files("#upload-files", files)
    page.get_by_role("button", name="Upload and create").click()
    return page.locator("#upload-msg .msg.error").inner_text()


def test_uploads_are_checked(browser: Browser, server: Server, ui_root: Path) -> None:
    page = browser.page
    page.goto(server.url)
    before = snapshot(ui_root, server.data_dir / "projects")
    Image.new("RGB", (300, 300), (200, 30, 30)).save(ui_root.parent / "ok.png")
    good_bytes = (ui_root.parent / "ok.png").read_bytes()
    message = upload(browser, [{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hi"}])
    assert message.startswith("notes.txt: not an image file")
    page.reload()
    message = upload(
        browser,
        [
            {"name": "ok.png", "mimeType": "image/png", "buffer": good_bytes},
            {"name": "empty.png", "mimeType": "image/png", "buffer": b""},
        ],
    )
    assert message == "empty.png: empty file (0 bytes); upload the photo itself"
    page.reload()
    fake = {"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": b"<html>not a photo</html>"}
    message = upload(browser, [fake])
    assert message.startswith("fake.jpg: cannot read image (not a supported image)")
    browser.shot("bad-upload")
    assert snapshot(ui_root, server.data_dir / "projects") == before
    assert "No project yet" in page.locator(".cards").inner_text()
    page.reload()
    page.set_input_files(
        "#upload-files", [{"name": "ok.png", "mimeType": "image/png", "buffer": good_bytes}]
    )
    page.get_by_role("button", name="Upload and create").click()
    page.wait_for_url(re.compile(r"/p/1/dataset$"))
    page.locator('figure.card[data-name="ok.png"]').wait_for()
    assert (server.data_dir / "projects" / "1" / "photos" / "ok.png").read_bytes() == good_bytes


def test_folders_outside_the_roots(browser: Browser, server: Server, ui_root: Path) -> None:
    page = browser.page
    outside = write_photos(ui_root.parent / "outside")
    (ui_root / "link").symlink_to(outside)
    write_photos(ui_root / "inside")
    page.goto(server.url)
    before = snapshot(ui_root, server.data_dir / "projects")
    cases = {
        str(outside): "is outside the folders this UI may open",
        f"{ui_root}/../outside": "'..' is not allowed",
        str(ui_root / "link"): "is outside the folders this UI may open",
    }
    for folder, expected in cases.items():
        page.fill("#folder-input", folder)
        page.get_by_role("button", name="Create project").click()
        message = page.locator("#new-folder-msg .msg.error")
        message.get_by_text(expected).wait_for()
        assert message.count() == 1
    browser.shot("bad-folder")
    listed = page.locator("#browser [data-pick]")
    listed.first.wait_for()
    assert listed.evaluate_all("items => items.map(item => item.dataset.pick)") == [
        str(ui_root.resolve() / "inside")
    ]
    page.goto(f"{server.url}browse?path={outside}")
    assert "outside the folders" in page.content()
    assert snapshot(ui_root, server.data_dir / "projects") == before


def test_config_errors_inline(browser: Browser, server: Server, ui_root: Path) -> None:
    page = browser.page
    write_photos(ui_root / "photos")
    page.goto(server.url)
    page.fill("#folder-input", str(ui_root / "photos"))
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url(re.compile(r"/p/1/dataset$"))
    page.goto(f"{server.url}p/1/train")
    work = server.data_dir / "projects" / "1"
    before = snapshot(ui_root, work)
    page.fill('[name="training.epochs"]', "0")
    page.get_by_role("button", name="Check (dry run)").click()
    error = page.locator('.field[data-key="training.epochs"] .msg.error')
    error.get_by_text("greater than or equal to 1").wait_for()
    assert "train.toml: training.epochs" in error.inner_text()
    browser.shot("bad-config")
    page.fill('[name="training.epochs"]', "2")
    page.fill('[name="model.path"]', str(ui_root / "missing.safetensors"))
    page.get_by_role("button", name="Check (dry run)").click()
    error = page.locator('.field[data-key="model.path"] .msg.error')
    error.wait_for()
    assert "missing.safetensors" in error.inner_text()
    page.fill('[name="model.path"]', "/etc/passwd")
    page.get_by_role("button", name="Start training").click()
    page.locator("#start-msg").get_by_text("outside the folders").wait_for()
    assert snapshot(ui_root, work) == before
    assert server.jobs.list() == []
