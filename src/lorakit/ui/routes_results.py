"""Results page: the loss chart, epoch files, the epoch × weight grid, pick and verify.

The grid, `pick` and `lora verify` load models, so they are worker jobs running the CLI
commands (`lorakit grid`, `lorakit pick`, `lorakit lora verify --json`); the grid image
stays on disk and is shown again until a newer epoch file makes it stale, and pick's
choice, with the signals that decided it, is read back from summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from lorakit.errors import LorakitError
from lorakit.inference.run import load_summary
from lorakit.training.checkpoint import read_summary
from lorakit.ui.app import UI, redirect, ui_of
from lorakit.ui.jobs import Job
from lorakit.ui.projects import Project

router = APIRouter()


def run_summary(project: Project) -> dict[str, Any]:
    try:
        return read_summary(project.out) if project.out.is_dir() else {}
    except LorakitError:
        return {}


def lora_files(project: Project) -> list[Path]:
    if not project.out.is_dir():
        return []
    return sorted(project.out.glob("*.safetensors"))


def grid_is_current(project: Project) -> bool:
    grid = project.out / "grid.png"
    files = lora_files(project)
    newest = max((f.stat().st_mtime for f in files), default=0.0)
    return grid.is_file() and grid.stat().st_mtime >= newest


def verify_result(ui: UI, job: Job | None) -> dict[str, Any] | None:
    if job is None or job.state != "done":
        return None
    try:
        return json.loads(ui.jobs.out_path(job.id).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _chart(summary: dict[str, Any]) -> dict[str, Any]:
    epochs = summary.get("epochs", [])
    return {
        "series": [
            [e["epoch"] for e in epochs],
            [e.get("train_loss") for e in epochs],
            [e.get("val_loss") for e in epochs],
        ],
        "labels": ["epoch", "train loss", "validation loss"],
    }


@router.get("/p/{project_id}/results", response_class=HTMLResponse)
def results_page(request: Request, project_id: int) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    summary = run_summary(project)
    verify_job = ui.jobs.latest(project.id, "verify")
    return ui.page(
        request,
        "results.html",
        project=project,
        stage="results",
        summary=summary,
        chart=_chart(summary),
        files=[f.name for f in lora_files(project)],
        grid=grid_is_current(project),
        grid_job=ui.jobs.latest(project.id, "grid"),
        report=summary.get("pick"),
        pick_job=ui.jobs.latest(project.id, "pick"),
        verify_job=verify_job,
        verify=verify_result(ui, verify_job),
    )


def base_model(project: Project) -> str:
    summary = run_summary(project)
    model = summary.get("base_model")
    if not model:
        raise LorakitError(f"{project.out}: no finished epoch yet; train first")
    return str(model)


@router.post("/p/{project_id}/grid")
def render_grid(request: Request, project_id: int, steps: str = Form("")) -> Response:
    """`lorakit grid` of the run; empty steps take the family's default (SD 20, FLUX.1
    dev 20, schnell 4)."""
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    load_summary(project.out)
    argv = ["grid", str(project.out), "--seed", "1"]
    if steps.strip():
        if not steps.strip().isdigit() or not 1 <= int(steps) <= 150:
            raise LorakitError(f"steps must be a whole number from 1 to 150, got {steps!r}")
        argv += ["--steps", steps.strip()]
    job = ui.jobs.submit(project.id, "grid", argv, {"cwd": str(project.work)})
    return redirect(f"/jobs/{job.id}")


@router.post("/p/{project_id}/pick")
def pick_epoch(request: Request, project_id: int) -> Response:
    """`lorakit pick` as a job: it measures every epoch's signals with the base model, and
    stores its choice in summary.json, where the results page reads it."""
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    load_summary(project.out)
    job = ui.jobs.submit(project.id, "pick", ["pick", str(project.out)], {"cwd": str(project.work)})
    return redirect(f"/jobs/{job.id}")


@router.post("/p/{project_id}/verify")
def verify(request: Request, project_id: int, name: str = Form(...)) -> Response:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    if name not in {f.name for f in lora_files(project)}:
        raise LorakitError(f"{name}: not a LoRA file of this run")
    argv = ["lora", "verify", str(project.out / name), "--json", "--base", base_model(project)]
    info = {"cwd": str(project.work), "ok_codes": [0, 1], "file": name}
    job = ui.jobs.submit(project.id, "verify", argv, info)
    return redirect(f"/jobs/{job.id}")
