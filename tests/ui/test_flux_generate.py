"""The Generate page of a project whose run trained a FLUX.1 LoRA: FLUX's form (steps and
guidance, none of SD's sampler/CFG/negative/img2img) and a job that renders with the
component files the run was trained with, read back as Forge's infotext; the results
page's grid job renders the run at FLUX.1's own step count."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lorakit.cli.main import main as lorakit
from lorakit.training.config import config_from_dict, merge, save_config
from lorakit.ui.jobs import JobStore
from lorakit.ui.store import DataDir
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files
from tests.test_train_support import fast_config, make_concept
from tests.ui.test_server import _wait_job, client, csrf


def _train_flux(root: Path, data: Path, out: Path) -> dict[str, Path]:
    """A 1-epoch tiny FLUX.1 dev run on `data` into `out`, given as BFL + clip_l/t5xxl/ae
    files."""
    pipe = tiny_flux_pipeline("dev")
    pipe.save_pretrained(root / "folder")
    files = write_flux_files(pipe, root / "files")
    components = {key: str(files[key]) for key in ("clip_l", "t5xxl", "ae")}
    overrides = {
        "model": {**components, "config": str(root / "folder")},
        "dataset": {"trigger": "sks"},
        "training": {"epochs": 1},
        "saving": {"name": "lora"},
    }
    base = fast_config(files["transformer"], data, out).to_dict()
    config = config_from_dict(merge(base, overrides), "test config")
    save_config(config, root / "run.toml")
    assert lorakit(["train", str(root / "run.toml")]) == 0
    return files


def test_a_flux_run_gets_flux_s_form_and_renders_with_its_files(tmp_path: Path) -> None:
    photos = make_concept(tmp_path / "photos", count=2)
    c = client(tmp_path)
    token = {"X-CSRF-Token": csrf(c)}
    assert c.post("/projects", data={"folder": str(photos)}, headers=token).is_success
    work = tmp_path / ".ui" / "projects" / "1"
    files = _train_flux(tmp_path / "model", photos, work / "out")

    page = c.get("/p/1/generate").text
    assert 'name="guidance"' in page and 'name="steps"' in page
    for sd_only in ('name="sampler"', 'name="cfg"', 'name="negative"', 'name="init_image"'):
        assert sd_only not in page

    form = {"prompt": "<lora:lora:1> sks photo", "steps": "2", "seed": "5", "guidance": "2.5"}
    submitted = c.post("/p/1/generate", data=form, headers=token)
    job_id = int(submitted.headers["HX-Redirect"].rsplit("/", 1)[1])
    jobs = JobStore(DataDir(tmp_path / ".ui"))
    argv = jobs.get(job_id).argv
    assert argv[argv.index("--t5xxl") + 1] == str(files["t5xxl"])
    assert "--sampler" not in argv and "--cfg" not in argv
    grid = c.post("/p/1/grid", data={"steps": ""}, headers=token)
    grid_id = int(grid.headers["HX-Redirect"].rsplit("/", 1)[1])
    assert "--steps" not in jobs.get(grid_id).argv  # FLUX.1's default, not SD's 20
    worker = subprocess.Popen([sys.executable, "-m", "lorakit.ui.worker", str(tmp_path / ".ui")])
    try:
        finished = [
            _wait_job(jobs, job, lambda s: s not in ("queued", "running"))
            for job in (job_id, grid_id)
        ]
    finally:
        worker.kill()
        worker.wait()
    assert [job.state for job in finished] == ["done", "done"], [j.message for j in finished]
    assert (work / "out" / "grid.png").is_file()
    (image,) = (work / "generated").glob("*.png")
    info = c.get(f"/p/1/gen/{image.name}/info").text
    assert "Distilled CFG Scale: 2.5" in info and "Steps: 2" in info
    assert "Lora hashes" in info and "Module 3: t5xxl" in info
