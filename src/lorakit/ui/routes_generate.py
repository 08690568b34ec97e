"""Generate page: `lorakit generate` with the run's LoRAs, and a gallery of its PNGs.

Every input is checked as the CLI checks it (sampler name, `<lora:…>` tags resolved in the
run folder, an img2img start image decoded) before a job is queued; the images carry A1111
infotext, which the gallery reads back with `lorakit png-info`'s reader. A FLUX.1 run gets
FLUX's form (steps and dev's distilled guidance; no sampler, CFG, negative or img2img, which
`generate` refuses for FLUX.1) and the component files its run was trained with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.inference.metadata import read_parameters
from lorakit.inference.prompt import parse_prompt
from lorakit.inference.run import run_model_section
from lorakit.inference.samplers import SAMPLERS, canonical_sampler_name
from lorakit.ui.app import redirect, ui_of
from lorakit.ui.projects import Project
from lorakit.ui.routes_jobs import confined_file
from lorakit.ui.routes_projects import check_upload
from lorakit.ui.routes_results import base_model, run_summary

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


def flux_arguments(project: Project) -> list[str] | None:
    """`--clip-l/--t5xxl/--ae/--config` of a FLUX.1 run, from its config.toml; None for SD."""
    if run_summary(project).get("family") != FLUX1.value:
        return None
    model = run_model_section(project.out)
    given = {"--clip-l": model.clip_l, "--t5xxl": model.t5xxl, "--ae": model.ae}
    given["--config"] = model.config
    return [part for flag, value in given.items() if value for part in (flag, value)]


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
        flux=flux_arguments(project) is not None,
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


def _numbers(fields: list[tuple[str, str, type]]) -> list[str]:
    """`--flag value` for each field filled in, each checked to be a number of its kind."""
    argv = []
    for flag, text, kind in fields:
        value = _number(text, flag.lstrip("-"), kind)
        if value is not None:
            argv += [flag, value]
    return argv


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
    guidance: str = Form(""),
    init_image: UploadFile | None = None,
) -> Response:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    argv = ["generate", prompt, "--model", base_model(project), "--lora-dir", str(project.out)]
    argv += ["--out", str(project.generated)]
    parse_prompt(prompt, project.out)
    numbers = [("--steps", steps, int), ("--seed", seed, int)]
    numbers += [("--width", width, int), ("--height", height, int)]
    flux = flux_arguments(project)
    if flux is not None:
        argv += [*flux, *_numbers([*numbers, ("--guidance", guidance, float)])]
        job = ui.jobs.submit(project.id, "generate", argv, {"cwd": str(project.work)})
        return redirect(f"/jobs/{job.id}")
    argv += ["--sampler", canonical_sampler_name(sampler)]
    argv += _numbers([*numbers, ("--cfg", cfg, float)])
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
