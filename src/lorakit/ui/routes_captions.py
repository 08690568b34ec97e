"""Captions page: the tagger/captioner job, a per-image editor, bulk tag edits, frequencies.

Captions live in the project's prepared run folder (never in the source photos); every
write is atomic. Bulk edits are the `lorakit tags` stage functions: plan, show the diff,
apply only on a second, explicit request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from lorakit.captioning.choices import ExistingCaptions
from lorakit.captioning.edit import (
    add_tags,
    apply_edits,
    find_caption_files,
    plan_edits,
    remove_tags,
    replace_tag,
    unified_diff,
)
from lorakit.captioning.tags import parse_tags, tag_frequencies
from lorakit.dataset.scan import ImageRecord, scan_dataset
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.ui.app import message, redirect, ui_of
from lorakit.ui.projects import Project

router = APIRouter()
CAPTION_EXT = ".txt"


def prepared_records(project: Project) -> list[ImageRecord]:
    if not project.prepared:
        raise LorakitError("the photos are not prepped yet; run prep on the dataset page first")
    return scan_dataset(project.run, CAPTION_EXT).records


def _record(project: Project, name: str) -> ImageRecord:
    for record in prepared_records(project):
        if record.path.relative_to(project.run).as_posix() == name:
            return record
    raise LorakitError(f"{name}: not an image of this project's prepared dataset")


@router.get("/p/{project_id}/captions", response_class=HTMLResponse)
def captions_page(request: Request, project_id: int, i: int = 0) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    if not project.prepared:
        return ui.page(request, "captions.html", project=project, stage="captions", ready=False)
    records = prepared_records(project)
    i = min(max(i, 0), len(records) - 1)
    record = records[i]
    captions = [r.caption for r in records if r.caption is not None]
    return ui.page(
        request,
        "captions.html",
        project=project,
        stage="captions",
        ready=True,
        index=i,
        count=len(records),
        name=record.path.relative_to(project.run).as_posix(),
        caption=record.caption or "",
        frequencies=tag_frequencies(captions).most_common(40),
        captioned=len(captions),
        job=ui.jobs.latest(project.id, "caption"),
    )


@router.get("/p/{project_id}/prepared")
def prepared_image(request: Request, project_id: int, name: str) -> FileResponse:
    project = ui_of(request).projects.get(project_id)
    return FileResponse(_record(project, name).path)


@router.post("/p/{project_id}/captions/save", response_class=HTMLResponse)
def save_caption(
    request: Request, project_id: int, name: str = Form(...), text: str = Form("")
) -> HTMLResponse:
    project = ui_of(request).projects.get(project_id)
    record = _record(project, name)
    clean = " ".join(text.split())
    if not clean:
        raise LorakitError(
            f"{name}: an empty caption trains on nothing; write what the photo shows"
        )
    target = record.path.with_suffix(CAPTION_EXT)
    atomic_write_text(target, clean + "\n")
    return message(f"saved {target.name}")


def _operation(op: str, tags: str, new: str):
    parsed = parse_tags(tags)
    if not parsed:
        raise LorakitError("no tag given; type at least one tag")
    if op == "add":
        return add_tags(parsed)
    if op == "remove":
        return remove_tags(parsed)
    if op == "replace":
        replacement = parse_tags(new)
        if len(parsed) != 1 or len(replacement) != 1:
            raise LorakitError("replace takes one tag and its replacement, e.g. 'hat' → 'cap'")
        return replace_tag(parsed[0], replacement[0])
    raise LorakitError(f"unknown tag action {op!r}; use add, remove or replace")


@dataclass(frozen=True)
class TagEditForm:
    """The bulk tag form, shared by its preview and its apply buttons."""

    op: str = Form(...)
    tags: str = Form("")
    new: str = Form("")
    files: str = Form("")

    def edits(self, project: Project):
        found = find_caption_files(project.run, ext=CAPTION_EXT, files=self.files.strip() or None)
        return found, plan_edits(found.captions, _operation(self.op, self.tags, self.new))


@router.post("/p/{project_id}/tags/preview", response_class=HTMLResponse)
def preview_tags(
    request: Request, project_id: int, form: Annotated[TagEditForm, Depends()]
) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    found, edits = form.edits(project)
    diff = [line for edit in edits for line in unified_diff(edit, project.run)]
    return ui.fragment(
        request,
        "tag_preview.html",
        project=project,
        diff=diff,
        changes=len(edits),
        total=len(found.captions),
        form=asdict(form),
    )


@router.post("/p/{project_id}/tags/apply", response_class=HTMLResponse)
def apply_tags(
    request: Request, project_id: int, form: Annotated[TagEditForm, Depends()]
) -> HTMLResponse:
    project = ui_of(request).projects.get(project_id)
    found, edits = form.edits(project)
    apply_edits(edits)
    return message(f"changed {len(edits)} of {len(found.captions)} caption files")


@router.post("/p/{project_id}/captions/run")
def run_captioner(
    request: Request,
    project_id: int,
    model: str = Form(...),
    kind: str = Form("tagger"),
    prefix: str = Form(""),
    undesired: str = Form(""),
    existing: str = Form("append"),
) -> Response:
    """Queue `lorakit caption RUN --tagger|--captioner PATH` for the worker."""
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    prepared_records(project)
    if kind not in ("tagger", "captioner"):
        raise LorakitError(f"unknown model kind {kind!r}; use tagger or captioner")
    if existing not in {mode.value for mode in ExistingCaptions}:
        raise LorakitError(f"unknown choice {existing!r} for existing captions")
    path: Path = ui.roots.resolve(model, "model path")
    if not path.exists():
        raise LorakitError(f"model path {model}: not found; give the folder of a local model")
    argv = ["caption", str(project.run), f"--{kind}", str(path)]
    argv += ["--prefix", prefix, "--undesired", undesired, f"--{existing}"]
    job = ui.jobs.submit(project.id, "caption", argv, {"cwd": str(project.work)})
    return redirect(f"/jobs/{job.id}")
