"""The output folder of a run, checked and claimed before anything heavy is loaded.

A folder *holds a run* when it has anything `lorakit train` writes there: `summary.json`,
`config.toml`, `state/` (or the `.state-new` / `.state-old` of an interrupted state save),
`logs/`, or LoRA files of the run's name (`<name>.safetensors`, `<name>-000001.safetensors`,
`<name>-step00000100.safetensors`). Training a new run there would mix two runs (epoch
files, summary and TensorBoard curves of both), so it is refused unless the run continues
(`--resume <folder>/state`) or `--overwrite` moves the old run's files into
`<folder>/.previous-<time>/`; nothing is deleted. `cache/` stays where it is: its latents
are keyed by image, size and bucket, so they stay valid for the new run.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.fileio import check_writable_folder, temp_target
from lorakit.training import checkpoint as ckpt
from lorakit.training.checkpoint import Progress
from lorakit.training.config import TrainConfig

RUN_FILES = (ckpt.SUMMARY, "config.toml", ckpt.STATE, ckpt.FRESH, ckpt.OLD, "logs")
# Moved aside with the run but no sign of one on their own.
COMPANIONS = ("samples", "loss.png", "grid.png", "sample_prompts.txt")


@dataclass
class RunStart:
    """Where a run starts: a fresh folder, or a checked state to continue from."""

    out: Path
    name: str
    state: Path | None = None
    progress: Progress | None = None
    training: dict[str, Any] | None = None
    moved_to: Path | None = None


def _lora_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(name)}(-\d{{6}}|-step\d{{8}})?\.safetensors")


def run_files(out: Path, name: str) -> list[str]:
    """What in `out` shows that it holds a run (empty for a fresh or missing folder)."""
    if not out.is_dir():
        return []
    lora = _lora_pattern(name)
    return sorted(
        entry.name
        for entry in out.iterdir()
        if entry.name in RUN_FILES or lora.fullmatch(entry.name)
    )


def _describe(out: Path, found: list[str]) -> str:
    """The run in `out` in a few words: its name and progress when its summary says them."""
    try:
        summary = ckpt.read_summary(out)
    except LorakitError:
        summary = {}
    epochs = summary.get("epochs") or []
    if summary.get("name") and epochs:
        last = epochs[-1]
        return f'run "{summary["name"]}" (epoch {last.get("epoch")}, step {last.get("step")})'
    shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
    return f"another run ({shown})"


def _refuse(out: Path, found: list[str]) -> None:
    saved = any((out / folder).is_dir() for folder in (ckpt.STATE, ckpt.FRESH, ckpt.OLD))
    resume = f"--resume {out / ckpt.STATE} to continue it, " if saved else ""
    raise LorakitError(
        f"{out} holds {_describe(out, found)}; pass {resume}a new saving.output_dir, or "
        f"--overwrite to move the old run to {out}/.previous-<time>/"
    )


def move_aside(out: Path, name: str) -> Path:
    """Move the run's files (and stale temporaries) into `out/.previous-<time>/`."""
    aside = out / time.strftime(".previous-%Y%m%d-%H%M%S")
    while aside.exists():
        aside = aside.with_name(aside.name + "-1")
    aside.mkdir()
    lora = re.compile(r".+\.safetensors")
    for entry in list(out.iterdir()):
        ours = entry.name in RUN_FILES or entry.name in COMPANIONS or lora.fullmatch(entry.name)
        if ours or temp_target(entry):
            entry.rename(aside / entry.name)
    return aside


def _is_run_output(name: str) -> Callable[[str], bool]:
    lora = _lora_pattern(name)
    return lambda target: bool(lora.fullmatch(target)) or target in (ckpt.SUMMARY, "config.toml")


def remove_stale_temps(out: Path, name: str) -> list[Path]:
    """Delete what a killed save left: hidden temporaries of this run's files and samples."""
    ours = _is_run_output(name)
    found = [p for p in out.glob(".*.tmp") if (t := temp_target(p)) and ours(t)]
    found += [p for p in (out / "samples").glob(".*.tmp") if temp_target(p)]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _ways_on(out: Path, name: str) -> str:
    """How to go on when a state cannot be resumed."""
    newest = ckpt.newest_file(out, name) if out.is_dir() else None
    ways = "start the run again with --overwrite"
    if newest is not None:
        ways += (
            f', or start a new run from its last file: --set network.weights="{newest}" '
            "--set saving.output_dir=<a new folder>"
        )
    return ways


def check_state(path: Path, config: TrainConfig) -> tuple[Progress, dict[str, Any]]:
    """The counters and the (weights-only) training tensors a resume from `path` gets
    (after `state.recover`); one line with the ways on when it cannot be resumed."""
    from lorakit.training import state as st  # torch: kept out of the UI's start

    out, name = path.parent, config.saving.name
    source = st.resumable(path)
    why = st.problem(source)
    if why is not None:
        raise LorakitError(f"{path}: {why}; {_ways_on(out, name)}")
    try:
        progress = st.read_progress(source)
        training = st.load_training(source)
    except LorakitError as exc:
        raise LorakitError(f"{exc}; {_ways_on(out, name)}") from None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    saved = len(list(source.glob("rng-*.json")))
    if saved != world:
        raise LorakitError(
            f"{path}: saved by {saved} processes; resume with {saved} (this run has {world})"
        )
    return progress, training


@contextmanager
def _main_process_first() -> Iterator[bool]:
    """Yield whether this is the process that changes the folder; the others wait for it."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        yield True
        return
    import torch
    from accelerate import PartialState

    # `cpu` as `make_accelerator` gives it: the process group is created once, here.
    state = PartialState(cpu=not torch.cuda.is_available())
    yield state.is_main_process
    state.wait_for_everyone()


def prepare_run_folder(
    config: TrainConfig, resume: Path | None = None, overwrite: bool = False
) -> RunStart:
    """Check that the run can write its folder and start there; claim it.

    Raises a one-line `LorakitError` when the folder cannot be written, holds another
    run, or `resume` is no usable state; everything is checked before anything changes.
    Then `overwrite` moves the old run aside, a resume finishes an interrupted state swap,
    and stale temporaries of the run's files are removed.
    """
    out, name = Path(config.saving.output_dir), config.saving.name
    if resume is not None and overwrite:
        raise LorakitError("--overwrite starts a new run and --resume continues one; pass one")
    check_writable_folder(out, "saving.output_dir")
    resume = Path(resume) if resume is not None else None
    continuing = resume is not None and resume.absolute().parent == out.absolute()
    found = [] if continuing else run_files(out, name)
    if found and not overwrite:
        _refuse(out, found)
    start = RunStart(out, name, state=resume)
    if resume is not None:
        start.progress, start.training = check_state(resume, config)
    with _main_process_first() as main:
        if main and found:
            start.moved_to = move_aside(out, name)
        if main and resume is not None:
            from lorakit.training.state import recover

            recover(resume)
        if main and out.is_dir():
            remove_stale_temps(out, name)
    return start


def report_finished(start: RunStart, progress: Progress) -> None:
    """A resumed run that has nothing left to do says so and where its LoRA is (stdout)."""
    last = ckpt.last_file(start.out, start.name)
    where = f"LoRA: {last}" if last.is_file() else "its LoRA file is gone"
    print(
        f"{start.state}: this run is finished (step {progress.step}, epoch "
        f"{progress.epoch - 1}); {where}. To train further, start a new run from it with "
        f'--set network.weights="{last}" and a new saving.output_dir'
    )
