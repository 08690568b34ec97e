"""Generate page: `lorakit generate` with the run's LoRAs, and a gallery of its PNGs.

Every input is checked as the CLI checks it (sampler name, `<lora:…>` tags resolved in the
run folder, an img2img start image decoded) before a job is queued; the images carry A1111
infotext, which the gallery reads back with `lorakit png-info`'s reader.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from lorakit.errors import LorakitError
from lorakit.inference.metadata import read_parameters
from lorakit.inference.prompt import parse_prompt
from lorakit.inference.samplers import SAMPLERS, canonical_sampler_name
from lorakit.ui.app import redirect, ui_of
from lorakit.ui.projects import Project
from lorakit.ui.routes_jobs import confined_file
from lorakit.ui.routes_projects import check_upload
from lorakit.ui.routes_results import base_model

router = APIRouter()


def gallery(project: Project) -> list[str]:
    if not project.generated.is_dir():
        return []
    images = sorted(project.generated.glob("*.png"), key=lambda p: p.stat().st_mtime)
    return [p.name for p in reversed(images)]


def default_prompt(project: Project) -> str:
    prep = project.settings.get("prep", {})
    words = " ".join(w for w in (prep.get("trigger"), prep.get("class_name")) if w)
    return f"<lora:{project.lora_name}:1> {words}".strip()


@router.get("/p/{project_id}/generate", response_class=HTMLResponse)
def generate_page(request: Request, project_id: int) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    return ui.page(
        request,
        "generate.html",
        project=project,
        stage="generate",
        prompt=default_prompt(project),
        samplers=list(SAMPLERS),
        images=gallery(project),
        job=ui.jobs.latest(project.id, "generate"),
    )


def _number(text: str, name: str, kind: type = int) -> str | None:
    text = text.strip()
    if not text:
        return None
    try:
        kind(text)
    except ValueError:
        raise LorakitError(f"{name} must be a number, got {text!r}") from None
    return text


@router.post("/p/{project_id}/generate")
async def generate(
    request: Request,
    project_id: int,
    prompt: str = Form(...),
    negative: str = Form(""),
    sampler: str = Form("Euler a"),
    steps: str = Form("20"),
    cfg: str = Form("7"),
    seed: str = Form(""),
    width: str = Form(""),
    height: str = Form(""),
    strength: str = Form("0.75"),
    init_image: UploadFile | None = None,
) -> Response:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    argv = ["generate", prompt, "--model", base_model(project), "--lora-dir", str(project.out)]
    argv += ["--out", str(project.generated), "--sampler", canonical_sampler_name(sampler)]
    parse_prompt(prompt, project.out)
    for flag, text, kind in (
        ("--steps", steps, int),
        ("--cfg", cfg, float),
        ("--seed", seed, int),
        ("--width", width, int),
        ("--height", height, int),
    ):
        value = _number(text, flag.lstrip("-"), kind)
        if value is not None:
            argv += [flag, value]
    if negative.strip():
        argv += ["--negative", negative]
    if init_image is not None and init_image.filename:
        folder = project.work / "init"
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=project.work, prefix=".init-") as scratch:
            checked = check_upload(init_image.filename, await init_image.read(), Path(scratch))
            target = folder / checked.name
            checked.replace(target)
        argv += [
            "--init-image",
            str(target),
            "--strength",
            _number(strength, "strength", float) or "0.75",
        ]
    job = ui.jobs.submit(project.id, "generate", argv, {"cwd": str(project.work)})
    return redirect(f"/jobs/{job.id}")


@router.get("/p/{project_id}/gen/{name}")
def generated_image(request: Request, project_id: int, name: str) -> FileResponse:
    project = ui_of(request).projects.get(project_id)
    return FileResponse(confined_file(project.generated, name))


@router.get("/p/{project_id}/gen/{name}/info", response_class=HTMLResponse)
def generated_info(request: Request, project_id: int, name: str) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    text = read_parameters(confined_file(project.generated, name))
    return ui.fragment(request, "parameters.html", name=name, text=text)
