"""Projects page: the list with each project's state, the folder picker and uploads."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from lorakit.dataset.images import ImageError, load_rgb
from lorakit.dataset.scan import IMAGE_EXTS, is_image_file, scan_dataset
from lorakit.errors import LorakitError
from lorakit.ui.app import MAX_UPLOAD_BYTES, UI, redirect, ui_of
from lorakit.ui.progress import EventTail, train_progress
from lorakit.ui.projects import Project
from lorakit.ui.routes_dataset import start_lint

router = APIRouter()


def project_state(ui: UI, project: Project) -> tuple[str, str]:
    """(what the list shows, a CSS class): training 43 %, done, failed, dataset ready…"""
    job = ui.jobs.latest(project.id, "train")
    if job is not None and job.state == "running":
        total = job.info.get("total")
        percent = train_progress(EventTail(project.out / "logs"), total)["percent"]
        return f"training {percent} %", "running"
    if job is not None:
        label = {"queued": "training queued", "done": "done"}.get(job.state, job.label)
        return label, job.state
    if project.id in ui.linting:
        return "checking photos", "running"
    if project.prepared:
        return "dataset ready", "ready"
    return "new: check and prep the photos", "new"


@router.get("/", response_class=HTMLResponse)
def projects_page(request: Request) -> HTMLResponse:
    ui = ui_of(request)
    rows = []
    for project in ui.projects.all():
        state, css = project_state(ui, project)
        rows.append({"project": project, "state": state, "state_class": css})
    start = str(ui.roots.folders[0])
    return ui.page(request, "projects.html", rows=rows, start=start, project=None)


def _image_count(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if p.is_file() and is_image_file(p))
    except OSError:
        return 0


@router.get("/browse", response_class=HTMLResponse)
def browse(request: Request, path: str = "") -> HTMLResponse:
    """Subfolders of a folder inside the roots.

    Hidden folders and links that lead outside the roots are left out: listing a link would
    show (and count images in) a folder the UI refuses to open.
    """
    ui = ui_of(request)
    here = ui.roots.existing_folder(path or ui.roots.folders[0])
    subfolders = [
        {"name": p.name, "path": str(p), "images": _image_count(p)}
        for p in sorted(here.iterdir())
        if p.is_dir() and not p.name.startswith(".") and ui.roots.contains(p)
    ]
    parent = (
        here.parent if here not in ui.roots.folders and ui.roots.contains(here.parent) else None
    )
    return ui.fragment(
        request,
        "browse.html",
        here=here,
        parent=str(parent) if parent else None,
        subfolders=subfolders,
    )


@router.post("/projects")
def create_from_folder(request: Request, folder: str = Form(...), name: str = Form("")) -> Response:
    ui = ui_of(request)
    source = ui.roots.existing_folder(folder, "folder")
    scan_dataset(source)  # a folder without images is refused here, before anything is written
    project = ui.projects.create(name, source)
    start_lint(ui, project)
    return redirect(f"/p/{project.id}/dataset")


def check_upload(name: str, data: bytes, folder: Path) -> Path:
    """Write one uploaded image into `folder` if it is a usable image; else the CLI's
    one-line error, naming the uploaded file."""
    clean = Path(name or "").name
    if not clean or clean.startswith(".") or clean != name.replace("\\", "/").split("/")[-1]:
        raise LorakitError(f"{name!r}: not a plain file name; rename the file and upload again")
    if not is_image_file(Path(clean)):
        raise LorakitError(
            f"{clean}: not an image file; upload {', '.join(sorted(IMAGE_EXTS))} files"
        )
    if not data:
        raise LorakitError(f"{clean}: empty file (0 bytes); upload the photo itself")
    if len(data) > MAX_UPLOAD_BYTES:
        raise LorakitError(
            f"{clean}: {len(data) / 1e6:.0f} MB is over the {MAX_UPLOAD_BYTES // 10**6} MB "
            "upload limit; downscale it first"
        )
    target = folder / clean
    target.write_bytes(data)
    try:
        load_rgb(target)
    except ImageError as exc:
        raise LorakitError(f"{clean}: {exc.reason}; {exc.fix}") from None
    return target


@router.post("/projects/upload")
async def create_from_upload(
    request: Request, files: list[UploadFile], name: str = Form("uploaded photos")
) -> Response:
    """All files are checked in a scratch folder first: one bad file refuses the upload
    and nothing is kept."""
    ui = ui_of(request)
    files = [f for f in files if f.filename]
    if not files:
        raise LorakitError("no file chosen; drop images onto the page or pick them")
    scratch = Path(tempfile.mkdtemp(prefix=".upload-", dir=ui.data.root))
    try:
        for upload in files:
            check_upload(upload.filename or "", await upload.read(), scratch)
        project = ui.projects.create(name, None)
        project.source.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(project.source)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    start_lint(ui, project)
    return redirect(f"/p/{project.id}/dataset")
