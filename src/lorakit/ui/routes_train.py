"""Train page: preset, every config setting, inline validation, import, dry run, start.

Checking a form goes the CLI's way: the values become a TOML file and `build_config` (what
`lorakit train` calls) reads it with the chosen preset, then `dry_run` prints the plan. The
project's `train.toml` is replaced only when that succeeds, so a bad value changes nothing.
The job the Start button queues is the command shown on the page.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from lorakit.cli.train import PRESET_TYPES, build_config, require_paths
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.training.config import TrainConfig, merge, read_toml
from lorakit.training.rundir import run_files
from lorakit.ui import forms
from lorakit.ui.app import UI, redirect, ui_of
from lorakit.ui.projects import Project

router = APIRouter()
IMPORTERS = ("kohya", "civitai")


def initial_data(project: Project) -> dict[str, Any]:
    """The saved `train.toml`, else a start that points at the project's folders."""
    if project.config_path.is_file():
        return read_toml(project.config_path)
    data: dict[str, Any] = {
        "dataset": {"path": str(project.run)},
        "saving": {"output_dir": str(project.out), "name": project.lora_name},
    }
    if project.trigger:
        data["dataset"]["trigger"] = project.trigger
    return data


def _confine_paths(ui: UI, data: dict[str, Any]) -> dict[str, Any]:
    """Every path setting resolved inside the roots (or the UI's work folders)."""
    for key in forms.PATH_KEYS:
        value = forms.get(data, key)
        if not value:
            continue
        section, name = key.split(".")
        if isinstance(value, list):
            data[section][name] = [str(ui.allowed.resolve(v, key)) for v in value]
        else:
            data[section][name] = str(ui.allowed.resolve(str(value), key))
    return data


def _preset(value: str) -> str | None:
    if value and value not in PRESET_TYPES:
        raise LorakitError(f"unknown preset {value!r}; use one of {', '.join(PRESET_TYPES)}")
    return value or None


def check(ui: UI, project: Project, data: dict[str, Any], preset: str | None) -> dict[str, Any]:
    """Validate and plan `data` through the CLI's path; save it as `train.toml` if it holds."""
    from lorakit.training.target import dry_run

    data = _confine_paths(ui, data)
    text = tomli_w.dumps(data)
    with tempfile.NamedTemporaryFile(
        "w", suffix=".toml", dir=project.work, prefix=".check-", delete=True
    ) as draft:
        draft.write(text)
        draft.flush()
        args = argparse.Namespace(
            config=Path(draft.name),
            sets=[],
            caption_ext=None,
            preset=preset,
            from_kohya=None,
            from_civitai=None,
            dry_run=True,
        )
        try:
            config, reasons = build_config(args)
        except LorakitError as exc:  # name the file the user knows, not the draft
            raise LorakitError(str(exc).replace(draft.name, str(project.config_path))) from None
    require_paths(config)
    lines = dry_run(config)
    atomic_write_text(project.config_path, text)
    command = f"lorakit train {shlex.quote(str(project.config_path))}"
    if preset:
        command += f" --preset {preset}"
    return {"config": config, "reasons": reasons, "lines": lines, "toml": text, "command": command}


def _render(
    ui: UI,
    request: Request,
    project: Project,
    data: dict[str, Any],
    preset: str | None,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    notes: list[str] | None = None,
    template: str = "train_form.html",
) -> HTMLResponse:
    return ui.page(
        request,
        template,
        project=project,
        stage="train",
        fields=forms.FIELDS,
        values=forms.values(data),
        preset=preset or "",
        presets=PRESET_TYPES,
        result=result,
        error=error,
        error_field=forms.field_of(error, data) if error else None,
        notes=notes or [],
        importers=IMPORTERS,
    )


@router.get("/p/{project_id}/train", response_class=HTMLResponse)
def train_page(request: Request, project_id: int) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    preset = project.settings.get("preset")
    return _render(ui, request, project, initial_data(project), preset, template="train.html")


def _evaluate(request: Request, project: Project, form: Any) -> tuple[Any, ...]:
    ui = ui_of(request)
    preset = _preset(str(form.get("preset", "")))
    data = forms.form_to_data(form)
    try:
        return data, preset, check(ui, project, data, preset), None
    except LorakitError as exc:
        return data, preset, None, str(exc)


@router.post("/p/{project_id}/train/check", response_class=HTMLResponse)
async def train_check(request: Request, project_id: int) -> HTMLResponse:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    data, preset, result, error = _evaluate(request, project, await request.form())
    if result is not None:
        ui.projects.update(project, preset=preset)
    return _render(ui, request, project, data, preset, result, error)


@router.post("/p/{project_id}/train/import", response_class=HTMLResponse)
async def train_import(
    request: Request, project_id: int, file: UploadFile, kind: str = Form("kohya")
) -> HTMLResponse:
    """Merge a kohya_ss GUI or CivitAI trainer JSON into the settings shown."""
    from lorakit.training.import_civitai import import_civitai
    from lorakit.training.import_kohya import import_kohya

    ui = ui_of(request)
    project = ui.projects.get(project_id)
    if kind not in IMPORTERS:
        raise LorakitError(f"unknown import {kind!r}; use one of {', '.join(IMPORTERS)}")
    name = Path(file.filename or "settings.json").name
    with tempfile.TemporaryDirectory(dir=project.work, prefix=".import-") as scratch:
        path = Path(scratch) / name
        path.write_bytes(await file.read())
        result = (import_kohya if kind == "kohya" else import_civitai)(path)
    # The project owns its photos and its output folder; the file's paths are another
    # machine's (often Windows), so they never replace those.
    own = {"dataset": {"path": str(project.run)}, "saving": {"output_dir": str(project.out)}}
    data = merge(merge(initial_data(project), result.overrides), own)
    kept = [note for note in result.notes if not note.startswith("output_dir ")]
    notes = [f"imported {name}; the project's own photo and output folders are kept", *kept]
    if result.sample_prompts:
        prompts = project.work / "sample_prompts.txt"
        atomic_write_text(prompts, result.sample_prompts.rstrip("\n") + "\n")
        data = merge(data, {"sampling": {"prompts": str(prompts)}})
        notes.append(f"sample prompts written to {prompts}")
    return _render(ui, request, project, data, project.settings.get("preset"), notes=notes)


def total_steps(config: TrainConfig) -> int:
    """The run's optimizer steps, as the trainer will count them (for progress)."""
    from lorakit.training.data import build_items
    from lorakit.training.plan import make_plan
    from lorakit.training.target import resolve

    resolved = resolve(config)
    items = build_items(resolved, resolved.dataset.resolution or 512)
    return make_plan(resolved, items).total_steps


def start_over_args(out: Path, name: str, form: Any) -> list[str]:
    """`--overwrite` when the person ticked "start over"; a folder that holds another run is
    refused before queueing, as the CLI would refuse it, rather than failing in the worker."""
    if form.get("overwrite"):
        return ["--overwrite"]
    if run_files(out, name):
        raise LorakitError(
            f"{out} holds an earlier run; resume it from the Jobs page, or tick "
            "'start over' to move it aside into .previous-<time>/ (nothing is deleted)"
        )
    return []


@router.post("/p/{project_id}/train/start")
async def train_start(request: Request, project_id: int) -> Response:
    ui = ui_of(request)
    project = ui.projects.get(project_id)
    form = await request.form()
    _, preset, result, error = _evaluate(request, project, form)
    if error is not None:
        raise LorakitError(error)
    config = result["config"]
    argv = ["train", str(project.config_path)] + (["--preset", preset] if preset else [])
    ui.jobs.refuse_active(project.id, "train")
    argv += start_over_args(Path(config.saving.output_dir), config.saving.name, form)
    info = {"out": config.saving.output_dir, "total": total_steps(config), "cwd": str(project.work)}
    job = ui.jobs.submit(project.id, "train", argv, info)
    ui.projects.update(project, preset=preset)
    return redirect(f"/jobs/{job.id}")


@router.get("/p/{project_id}/train.toml")
def download_toml(request: Request, project_id: int) -> FileResponse:
    project = ui_of(request).projects.get(project_id)
    if not project.config_path.is_file():
        raise LorakitError("no train.toml yet; check the settings first")
    return FileResponse(project.config_path, filename="train.toml", media_type="application/toml")
