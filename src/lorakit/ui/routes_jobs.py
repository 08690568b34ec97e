"""Jobs: the queue, one job's live view (SSE), stop and resume, and a run's files."""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse

from lorakit.errors import LorakitError
from lorakit.ui.app import UI, redirect, ui_of
from lorakit.ui.jobs import FINAL, RESUMABLE, Job
from lorakit.ui.progress import EventTail, log_tail, samples, train_progress

router = APIRouter()
PUSH_INTERVAL = 0.5
SERVED = {".png", ".jpg", ".safetensors", ".json", ".toml", ".txt"}


def run_folder(ui: UI, job: Job) -> Path | None:
    out = job.info.get("out")
    return Path(out) if out else None


def snapshot(ui: UI, job_id: int, tail: EventTail | None) -> dict[str, Any]:
    """What the job page shows, as one JSON-able dict (pushed whenever it changes)."""
    job = ui.jobs.get(job_id)
    out = run_folder(ui, job)
    data: dict[str, Any] = {
        "state": job.state,
        "label": job.label,
        "final": job.state in FINAL,
        "message": job.message,
        "log": log_tail(ui.jobs.log_path(job.id)),
    }
    if tail is not None and out is not None:
        data["progress"] = train_progress(tail, job.info.get("total"))
        data["samples"] = samples(out)
    return data


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    ui = ui_of(request)
    names = {p.id: p.name for p in ui.projects.all()}
    return ui.page(
        request,
        "jobs.html",
        jobs=ui.jobs.list(),
        names=names,
        worker=ui.supervisor.worker_pid(),
        project=None,
    )


def _tail(job: Job) -> EventTail | None:
    return EventTail(Path(job.info["out"]) / "logs") if job.kind == "train" else None


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: int) -> HTMLResponse:
    ui = ui_of(request)
    job = ui.jobs.get(job_id)
    project = ui.projects.get(job.project_id) if job.project_id else None
    live = snapshot(ui, job.id, _tail(job))
    return ui.page(
        request,
        "job.html",
        job=job,
        live=live,
        project=project,
        stage="train" if job.kind == "train" else None,
        resumable=job.kind == "train" and job.state in RESUMABLE,
        command="lorakit " + shlex.join(job.argv),
    )


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: int) -> StreamingResponse:
    """Server-sent events: the job's snapshot whenever it changes, until it ends."""
    ui = ui_of(request)
    job = ui.jobs.get(job_id)
    tail = _tail(job)

    async def stream() -> AsyncIterator[str]:
        last = None
        while not await request.is_disconnected():
            data = await asyncio.to_thread(snapshot, ui, job_id, tail)
            text = json.dumps(data)
            if text != last:
                yield f"event: update\ndata: {text}\n\n"
                last = text
            else:
                yield ": still here\n\n"
            if data["final"]:
                return
            await asyncio.sleep(PUSH_INTERVAL)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.post("/jobs/{job_id}/stop")
def stop_job(request: Request, job_id: int) -> Response:
    ui = ui_of(request)
    ui.jobs.request_stop(job_id)
    return redirect(f"/jobs/{job_id}")


@router.post("/jobs/{job_id}/resume")
def resume_job(request: Request, job_id: int) -> Response:
    """Queue the same `lorakit train` with `--resume <out>/state`."""
    ui = ui_of(request)
    job = ui.jobs.get(job_id)
    if job.kind != "train" or job.state not in RESUMABLE:
        raise LorakitError(
            f"job #{job.id} is {job.label}; only a stopped or interrupted run resumes"
        )
    state = Path(job.info["out"]) / "state"
    if not (state / "complete").is_file():
        raise LorakitError(
            f"{state}: no saved state yet (the run stopped before its first save); "
            "start the run again from the train page"
        )
    argv = list(job.argv)
    if "--resume" in argv:
        del argv[argv.index("--resume") : argv.index("--resume") + 2]
    info = {k: v for k, v in job.info.items() if k != "slot"} | {"resumes": job.id}
    new = ui.jobs.submit(job.project_id, "train", [*argv, "--resume", str(state)], info)
    return redirect(f"/jobs/{new.id}")


def confined_file(folder: Path, name: str) -> Path:
    """`folder/name` if it is a served kind of file inside `folder` (no `..`, no links out)."""
    path = (folder / name).resolve()
    if ".." in Path(name).parts or not path.is_relative_to(folder.resolve()):
        raise LorakitError(f"{name}: outside this project's folder")
    if path.suffix.lower() not in SERVED or not path.is_file():
        raise LorakitError(f"{name}: no such file in this project")
    return path


@router.get("/p/{project_id}/out/{name:path}")
def run_file(request: Request, project_id: int, name: str, download: int = 0) -> FileResponse:
    project = ui_of(request).projects.get(project_id)
    path = confined_file(project.out, name)
    if download:
        return FileResponse(path, filename=path.name)
    return FileResponse(path, headers={"Cache-Control": "no-cache"})
