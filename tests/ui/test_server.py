"""The UI's server side without a browser: confinement, token, CSRF, the queue, progress."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lorakit.cli.main import main as lorakit
from lorakit.errors import LorakitError
from lorakit.training.config import config_from_dict
from lorakit.ui import forms
from lorakit.ui.app import create_app
from lorakit.ui.jobs import JobStore
from lorakit.ui.progress import EventTail, train_progress
from lorakit.ui.security import Roots
from lorakit.ui.store import DataDir

ROOT = Path(__file__).resolve().parents[2]


def client(tmp_path: Path, token: str | None = None) -> TestClient:
    app = create_app([tmp_path], tmp_path / ".ui", token=token, start_worker=False)
    return TestClient(app, base_url="http://127.0.0.1")


def csrf(c: TestClient) -> str:
    page = c.get("/").text
    return page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]


def test_roots_refuse_escapes(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "inner").mkdir(parents=True)
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    roots = Roots([root])
    assert roots.resolve("inner") == (root / "inner").resolve()
    for bad, why in (
        (str(outside), "outside the folders"),
        ("inner/../../outside", "'..' is not allowed"),
        (str(root / "escape"), "outside the folders"),
        (str(root / "escape" / "x.png"), "outside the folders"),
        ("", "is empty"),
    ):
        with pytest.raises(LorakitError, match=why):
            roots.resolve(bad)


def test_non_loopback_host_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["ui", "--host", "0.0.0.0", "--root", str(tmp_path), "--data-dir", str(tmp_path / "d")]
    assert lorakit(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--token" in err[0]
    assert not (tmp_path / "d").exists()


def test_token_is_required_on_every_request(tmp_path: Path) -> None:
    c = client(tmp_path, token="s3cret")
    assert c.get("/").status_code == 401
    assert c.get("/static/ui.js").status_code == 401
    assert c.get("/?token=wrong").status_code == 401
    assert c.get("/?token=s3cret").status_code == 200
    assert c.get("/jobs").status_code == 200  # the cookie set above carries it


def test_posts_need_the_csrf_token_and_a_local_host(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    c = client(tmp_path)
    form = {"folder": str(tmp_path / "photos")}
    assert c.post("/projects", data=form).status_code == 403
    bad = c.post("/projects", data=form, headers={"X-CSRF-Token": "guess"})
    assert bad.status_code == 403
    refused = c.post("/projects", data=form, headers={"X-CSRF-Token": csrf(c)})
    assert refused.status_code == 422 and "no images found" in refused.text
    assert c.get("/", headers={"host": "evil.example:80"}).status_code == 400


def test_a_job_whose_worker_died_is_interrupted(tmp_path: Path) -> None:
    jobs = JobStore(DataDir(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    job = jobs.submit(1, "train", ["train", "x.toml"], {"out": str(tmp_path)})
    claimed = jobs.claim_next(dead.pid)
    assert claimed is not None and claimed.id == job.id and claimed.state == "running"
    dead.wait()
    live = jobs.submit(2, "train", ["train", "y.toml"], {})
    jobs.claim_next(os.getpid())
    assert jobs.reconcile() == [job.id]
    assert jobs.get(job.id).label == "interrupted — resume"
    assert jobs.get(live.id).state == "running"
    with pytest.raises(LorakitError, match="already running"):
        jobs.submit(2, "train", ["train", "y.toml"], {})


def test_worker_runs_the_cli_and_records_errors(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "data")
    jobs = JobStore(data)
    ok = jobs.submit(None, "version", ["--version"], {})
    bad = jobs.submit(None, "plan", ["dataset", "plan", str(tmp_path / "nope")], {})
    worker = subprocess.Popen([sys.executable, "-m", "lorakit.ui.worker", str(data.root)])
    try:
        for _ in range(600):
            if jobs.get(bad.id).state not in ("queued", "running"):
                break
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()
    assert jobs.get(ok.id).state == "done"
    assert jobs.out_path(ok.id).read_text().startswith("lorakit ")
    failed = jobs.get(bad.id)
    assert failed.state == "failed" and failed.exit_code == 2
    assert failed.message == f"{tmp_path / 'nope'}: folder not found; check the path"


def test_progress_from_tensorboard_files(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path))
    for step in range(1, 6):
        writer.add_scalar("loss/current", 1.0 / step, step)
        writer.add_scalar("loss/average", 2.0 / step, step)
    writer.flush()
    tail = EventTail(tmp_path)
    progress = train_progress(tail, total=20)
    assert (progress["step"], progress["percent"], progress["loss"]) == (5, 25, "0.4000")
    assert progress["chart"][0] == [1, 2, 3, 4, 5]
    for step in range(6, 11):
        writer.add_scalar("loss/current", 0.01, step)
    writer.flush()
    writer.close()
    assert train_progress(tail, total=20)["step"] == 10
    events = next(tmp_path.glob("events.out.tfevents.*"))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / events.name).write_bytes(events.read_bytes()[:-7])  # a record half written
    assert train_progress(EventTail(cut), total=20)["step"] == 9


def as_submitted(shown: dict[str, str]) -> dict[str, str]:
    """What a browser posts: ticked checkboxes as "on", unticked ones not at all."""
    return {k: ("on" if v == "true" else v) for k, v in shown.items() if v != "false"}


def test_form_round_trip_and_inline_field() -> None:
    assert forms.form_to_data(as_submitted(forms.values({}))) == {}
    shown = forms.values({"training": {"epochs": 3}, "optimizer": {"args": {"betas": [0.9, 0.99]}}})
    submitted = as_submitted(shown)
    data = forms.form_to_data(submitted)
    assert data == {"training": {"epochs": 3}, "optimizer": {"args": {"betas": [0.9, 0.99]}}}
    bad = forms.form_to_data({**submitted, "network.rank": "0"})
    with pytest.raises(LorakitError) as caught:
        config_from_dict(bad, "train.toml")
    assert forms.field_of(str(caught.value), bad) == "network.rank"
    missing = {"model": {"path": "/m/none.safetensors"}}
    assert forms.field_of("/m/none.safetensors: not found", missing) == "model.path"


def test_the_text_cache_is_a_choice_and_an_older_true_false_shows_as_it_reads() -> None:
    """`training.cache_text_encoder` was a checkbox: a project saved then holds a boolean,
    which the form shows (and posts back) as the mode the config reads it as."""
    field = next(f for f in forms.FIELDS if f.key == "training.cache_text_encoder")
    assert (field.kind, field.options) == ("choice", ("memory", "disk", "none"))
    for saved, mode in ((False, "none"), (True, "memory"), ("disk", "disk")):
        shown = forms.values({"training": {"cache_text_encoder": saved}})
        assert shown["training.cache_text_encoder"] == mode
        data = forms.form_to_data(as_submitted(shown))
        assert config_from_dict(data).training.cache_text_encoder == mode


def test_a_start_into_a_folder_holding_a_run_needs_start_over(tmp_path: Path) -> None:
    from lorakit.ui.routes_train import start_over_args

    out = tmp_path / "out"
    assert start_over_args(out, "tiny", {}) == []
    out.mkdir()
    (out / "tiny-000001.safetensors").write_bytes(b"x")
    with pytest.raises(LorakitError, match=r"holds an earlier run.*start over"):
        start_over_args(out, "tiny", {})
    assert start_over_args(out, "tiny", {"overwrite": "1"}) == ["--overwrite"]
    assert (out / "tiny-000001.safetensors").read_bytes() == b"x"


def test_an_imported_config_keeps_the_projects_folders(tmp_path: Path) -> None:
    """A kohya_ss JSON names another machine's folders (here Windows ones): the project's
    photos and output folder stay what the project says."""
    from tests.ui.test_bad_input import write_photos

    write_photos(tmp_path / "photos")
    c = client(tmp_path)
    token = {"X-CSRF-Token": csrf(c)}
    made = c.post("/projects", data={"folder": str(tmp_path / "photos")}, headers=token)
    project = made.headers["HX-Redirect"].split("/")[2]
    settings = json.loads(
        (ROOT / "tests/fixtures/kohya_ss/locon-AdamW8bit.json").read_text(encoding="utf-8")
    )
    settings |= {"output_dir": "d:\\lycoris\\sdxl", "train_data_dir": "d:\\lycoris\\img"}
    upload = {"file": ("gui.json", json.dumps(settings).encode(), "application/json")}
    page = c.post(f"/p/{project}/train/import", files=upload, data={"kind": "kohya"}, headers=token)
    assert page.status_code == 200, page.text
    assert "lycoris" not in page.text
    assert f'value="{tmp_path / ".ui"}' in page.text  # the project's folders, under its data dir
    assert "project&#39;s own photo and output folders are kept" in page.text


def test_bulk_tag_edit_previews_then_writes(tmp_path: Path) -> None:
    from tests.ui.test_bad_input import write_photos

    write_photos(tmp_path / "photos")
    c = client(tmp_path)
    token = {"X-CSRF-Token": csrf(c)}
    made = c.post("/projects", data={"folder": str(tmp_path / "photos")}, headers=token)
    project = made.headers["HX-Redirect"].split("/")[2]
    prep = {"trigger": "zkz", "class_name": "robot", "repeats": "2"}
    assert "prepared 3 images" in c.post(f"/p/{project}/prep", data=prep, headers=token).text
    captions = sorted((tmp_path / ".ui").rglob("run/img/*/*.txt"))
    before = [path.read_text(encoding="utf-8") for path in captions]
    assert len(captions) == 3 and all("smiling" not in text for text in before)

    edit = {"op": "add", "tags": "smiling"}
    preview = c.post(f"/p/{project}/tags/preview", data=edit, headers=token)
    assert preview.status_code == 200 and "+" in preview.text and "smiling" in preview.text
    assert [path.read_text(encoding="utf-8") for path in captions] == before

    applied = c.post(f"/p/{project}/tags/apply", data=edit, headers=token)
    assert "changed 3 of 3 caption files" in applied.text
    assert all("smiling" in path.read_text(encoding="utf-8") for path in captions)
    bad = c.post(f"/p/{project}/tags/apply", data={"op": "explode", "tags": "x"}, headers=token)
    assert bad.status_code == 422 and "unknown tag action" in bad.text


def _wait_job(jobs: JobStore, job_id: int, done: Callable[[str], bool], seconds: float = 180):
    for _ in range(int(seconds * 10)):
        job = jobs.get(job_id)
        if done(job.state):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job #{job_id} still {jobs.get(job_id).state} after {seconds} s")


def test_stop_sends_ctrl_c_and_resume_finishes_the_run(tmp_path: Path, tiny_sd15_dir) -> None:
    """Stop on a running training job: the worker sends Ctrl-C, the run saves its state and
    the job reads "stopped — resume"; Resume queues `--resume <out>/state`, which ends the run
    at the step count of an uninterrupted one."""
    from lorakit.training.config import save_config
    from tests.test_train_support import fast_config, make_concept

    out = tmp_path / "out"
    data = make_concept(tmp_path / "data", count=3)
    config = fast_config(
        tiny_sd15_dir, data, out, dataset={"repeats": 8}, training={"epochs": 2, "batch_size": 1}
    )
    save_config(config, tmp_path / "train.toml")
    c = client(tmp_path)
    token = {"X-CSRF-Token": csrf(c)}
    jobs = JobStore(DataDir(tmp_path / ".ui"))
    job = jobs.submit(None, "train", ["train", str(tmp_path / "train.toml")], {"out": str(out)})
    worker = subprocess.Popen([sys.executable, "-m", "lorakit.ui.worker", str(tmp_path / ".ui")])
    try:
        _wait_job(jobs, job.id, lambda s: s == "running")
        tail = EventTail(out / "logs")
        for _ in range(1800):
            if train_progress(tail, None)["step"] > 0:
                break
            time.sleep(0.1)
        assert c.post(f"/jobs/{job.id}/stop", headers=token).headers["HX-Redirect"] == (
            f"/jobs/{job.id}"
        )
        stopped = _wait_job(jobs, job.id, lambda s: s not in ("queued", "running"))
        assert (stopped.state, stopped.label) == ("stopped", "stopped — resume")
        assert (out / "state" / "complete").is_file()
        resumed = c.post(f"/jobs/{job.id}/resume", headers=token)
        new_id = int(resumed.headers["HX-Redirect"].rsplit("/", 1)[1])
        assert jobs.get(new_id).argv[-2:] == ["--resume", str(out / "state")]
        finished = _wait_job(jobs, new_id, lambda s: s not in ("queued", "running"))
    finally:
        worker.kill()
        worker.wait()
    assert finished.state == "done", finished.message
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert summary["epochs"][-1]["step"] == 48
