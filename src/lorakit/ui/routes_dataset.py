"""Dataset page: thumbnails with lint badges, filters, exclude, prep settings and the plan."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from lorakit.cli.dataset import plan_lines
from lorakit.dataset.choices import CROPS, NATIVE_SIDE
from lorakit.dataset.lint import lint_dataset
from lorakit.dataset.plan import make_plan
from lorakit.dataset.prep import PrepOptions, prep_dataset
from lorakit.dataset.scan import ImageRecord, scan_dataset
from lorakit.errors import LorakitError
from lorakit.ui.app import UI, message, ui_of
from lorakit.ui.projects import Project, load_lint, save_lint, write_curated
from lorakit.ui.thumbs import thumbnail

router = APIRouter()
SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def _lint_and_thumbs(ui: UI, project: Project, family: str, trigger: str | None) -> None:
    try:
        findings = lint_dataset(project.source, family=family, trigger=trigger or None)
        report: dict[str, Any] = {"family": family, "trigger": trigger or ""}
        report["findings"] = [f.to_dict() for f in findings]
    except LorakitError as exc:
        report = {"family": family, "trigger": trigger or "", "error": str(exc), "findings": []}
    finally:
        ui.linting.discard(project.id)
    save_lint(project, report)
    for record in _records(project):
        thumbnail(record.path, ui.data.thumbs)


def start_lint(ui: UI, project: Project, family: str = "sd15", trigger: str = "") -> None:
    """Lint (and thumbnail) in the background: minutes for a large folder, never a page's
    time. The page shows "checking" until `lint.json` is written."""
    ui.linting.add(project.id)
    ui.background.submit(_lint_and_thumbs, ui, project, family, trigger)


def _records(project: Project) -> list[ImageRecord]:
    try:
        return scan_dataset(project.source).records
    except LorakitError:
        return []


def _name(project: Project, path: Path) -> str:
    return path.relative_to(project.source).as_posix()


def _cards(project: Project, report: dict[str, Any] | None) -> tuple[list[dict], list[dict]]:
    """One card per image with its findings, and the findings about the whole dataset."""
    by_name: dict[str, list[dict]] = {}
    overall = []
    for finding in (report or {}).get("findings", []):
        path = finding["path"]
        if path is None:
            overall.append(finding)
            continue
        target = Path(path)
        name = _name(project, target) if target.is_relative_to(project.source) else path
        by_name.setdefault(name, []).append(finding)
    cards = []
    for record in _records(project):
        name = _name(project, record.path)
        caption_name = _name(project, record.caption_path) if record.caption_path else None
        found = by_name.get(name, []) + (by_name.get(caption_name, []) if caption_name else [])
        found.sort(key=lambda f: SEVERITY_ORDER[f["severity"]])
        cards.append(
            {
                "name": name,
                "version": int(record.path.stat().st_mtime),
                "findings": found,
                "worst": found[0]["severity"] if found else "ok",
                "excluded": name in project.excluded,
                "caption": record.caption,
            }
        )
    return cards, overall


@router.get("/p/{project_id}/dataset", response_class=HTMLResponse)
def dataset_page(request: Request, project_id: int, rule: str = "") -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    report = load_lint(project)
    cards, overall = _cards(project, report)
    rules = Counter(f["rule"] for card in cards for f in card["findings"])
    shown = [c for c in cards if not rule or any(f["rule"] == rule for f in c["findings"])]
    prep = project.settings.get("prep", {})
    return ui.page(
        request,
        "dataset.html",
        project=project,
        stage="dataset",
        report=report,
        linting=project.id in ui.linting,
        cards=shown,
        total=len(cards),
        kept=sum(not c["excluded"] for c in cards),
        overall=overall,
        rules=sorted(rules.items()),
        rule=rule,
        prep=prep,
        crops=CROPS,
        families=sorted(NATIVE_SIDE),
        plan=_plan(len(cards) - len(project.excluded & {c["name"] for c in cards}), prep),
    )


@router.get("/p/{project_id}/thumb")
def thumb(request: Request, project_id: int, name: str) -> Response:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    path = (project.source / name).resolve()
    if ".." in Path(name).parts or not path.is_relative_to(project.source.resolve()):
        raise LorakitError(f"{name}: not an image of this project")
    made = thumbnail(path, ui.data.thumbs) if path.is_file() else None
    if made is None:
        return Response(status_code=404)
    return FileResponse(made, headers={"Cache-Control": "private, max-age=86400"})


@router.post("/p/{project_id}/exclude", response_class=HTMLResponse)
def exclude(
    request: Request, project_id: int, name: str = Form(...), excluded: str = Form("")
) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    if name not in {_name(project, r.path) for r in _records(project)}:
        raise LorakitError(f"{name}: not an image of this project")
    project = ui.projects.set_excluded(project, name, excluded == "1")
    card = next(c for c in _cards(project, load_lint(project))[0] if c["name"] == name)
    return ui.fragment(request, "card.html", project=project, card=card)


@router.post("/p/{project_id}/lint", response_class=HTMLResponse)
def relint(
    request: Request, project_id: int, family: str = Form("sd15"), trigger: str = Form("")
) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    if family not in NATIVE_SIDE:
        raise LorakitError(f"unknown model family {family!r}; use one of {', '.join(NATIVE_SIDE)}")
    start_lint(ui, project, family, trigger.strip())
    return message("checking the photos again; reload in a moment")


def _plan(images: int, fields: dict[str, Any]) -> dict[str, Any]:
    """The guides' arithmetic for the kept images, or the error it raises."""
    try:
        repeats = int(fields["repeats"]) if fields.get("repeats") else None
        epochs = int(fields.get("epochs") or 10)
        batch = int(fields.get("batch_size") or 1)
        plan = make_plan(max(images, 0), epochs, batch_size=batch, repeats=repeats)
    except (LorakitError, ValueError) as exc:
        return {"error": str(exc), "lines": []}
    return {"error": None, "lines": plan_lines(plan, None), "plan": plan}


@router.get("/p/{project_id}/plan", response_class=HTMLResponse)
def plan_fragment(request: Request, project_id: int) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    kept = [r for r in _records(project) if _name(project, r.path) not in project.excluded]
    return ui.fragment(request, "plan.html", plan=_plan(len(kept), dict(request.query_params)))


@router.post("/p/{project_id}/prep", response_class=HTMLResponse)
def prep(
    request: Request,
    project_id: int,
    trigger: str = Form(...),
    class_name: str = Form(...),
    crop: str = Form("none"),
    size: str = Form(""),
    repeats: str = Form(""),
    epochs: str = Form("10"),
    batch_size: str = Form("1"),
) -> HTMLResponse:
    """`lorakit dataset prep` of the kept photos into the project's run folder."""
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    try:
        options = PrepOptions(
            trigger=trigger.strip(),
            class_name=class_name.strip(),
            crop=crop,
            size=int(size) if size.strip() else None,
            repeats=int(repeats) if repeats.strip() else None,
        )
    except ValueError:
        raise LorakitError("size and repeats must be whole numbers, e.g. 512 and 10") from None
    names = [_name(project, r.path) for r in _records(project)]
    if all(n in project.excluded for n in names):
        raise LorakitError("every photo is excluded; include at least one before prep")
    staging = project.work / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        curated = write_curated(project, names, ".txt", staging / "curated")
        result = prep_dataset(curated, staging / "run", options)
        for folder in (project.curated, project.run):
            shutil.rmtree(folder, ignore_errors=True)
            (staging / folder.name).rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    fields = {"trigger": options.trigger, "class_name": options.class_name, "crop": crop}
    fields |= {"size": size, "repeats": repeats, "epochs": epochs, "batch_size": batch_size}
    ui.projects.update(project, prep=fields, repeats=result.repeats)
    return message(
        f"prepared {len(result.images)} images with {result.repeats} repeats in "
        f"{result.folder.name}; next: captions"
    )
