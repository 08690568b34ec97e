"""`state/`: what `--resume` needs to continue a run exactly, and no pickle.

A state folder holds `lora.safetensors` (the LoRA in fp32), `training.pt` (optimizer, LR
schedule and grad scaler: tensors and plain numbers, read back only with
`torch.load(weights_only=True)`, which refuses anything that could run code),
`progress.json` (epoch, step, position in the epoch, loss sums), one `rng-<process>.json`
per process (the Python, NumPy and torch generators) and `complete`, written last.

It is saved only between optimizer steps, so it always describes a step boundary. The
new folder is written as `.state-new` and swapped in by two renames; a kill between them
leaves `.state-old` and `.state-new` and no `state/`, and `recover` keeps the newest
complete one. Older lorakit versions kept accelerate's pickles here: such folders are
refused, never unpickled.
"""

from __future__ import annotations

import base64
import json
import pickle
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write_text
from lorakit.training.checkpoint import FRESH, OLD, STATE, Progress

COMPLETE = "complete"
LORA, TRAINING, PROGRESS = "lora.safetensors", "training.pt", "progress.json"


def rng_file(folder: Path, process: int) -> Path:
    return folder / f"rng-{process}.json"


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.numpy().tobytes()).decode("ascii")


def _tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def rng_state() -> dict[str, Any]:
    """This process's generators as JSON data (torch's states as base64 bytes)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    data: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        data["cuda"] = [_b64(state) for state in torch.cuda.get_rng_state_all()]
    return data


def set_rng_state(data: dict[str, Any]) -> None:
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_tensor(data["torch"]))
    cuda = data.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_tensor(state) for state in cuda])


def read_progress(folder: Path) -> Progress:
    """The counters of a state folder; LorakitError when they are not what lorakit wrote."""
    path = folder / PROGRESS
    progress = Progress()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        values = {key: type(default)(data[key]) for key, default in vars(progress).items()}
    except (OSError, ValueError, KeyError, TypeError):
        raise LorakitError(f"{path}: missing or damaged; the state folder is incomplete") from None
    progress.load_state_dict(values)
    return progress


def load_training(folder: Path) -> dict[str, Any]:
    """`training.pt` through torch's weights-only unpickler: tensors and numbers or nothing."""
    path = folder / TRAINING
    try:
        with warnings.catch_warnings():  # torch warns about what it is about to refuse
            warnings.simplefilter("ignore")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError):
        raise LorakitError(
            f"{path}: not a plain tensor file (refused: loading it could run code); "
            "the state folder was damaged or tampered with"
        ) from None
    if not isinstance(data, dict) or not {"optimizer", "scheduler"} <= data.keys():
        raise LorakitError(f"{path}: not a lorakit training state; the state folder is damaged")
    return data


def problem(folder: Path) -> str | None:
    """Why `folder` cannot be resumed from (None when it can), checked before any loading."""
    if not folder.is_dir():
        if (folder.parent / FRESH).is_dir():
            return "no complete lorakit state (the run was killed during its first state save)"
        return "no such folder"
    pickles = sorted(p.name for p in folder.glob("*.pkl"))
    if pickles:
        return (
            f"it holds pickle files ({', '.join(pickles)}), which lorakit never loads "
            "(a pickle can run any code; older lorakit versions wrote them)"
        )
    if not (folder / COMPLETE).is_file():
        return "not a complete lorakit state folder"
    return None


def _complete_step(folder: Path) -> int | None:
    """The step of a complete state folder (None when it is not one)."""
    if problem(folder) is not None:
        return None
    try:
        return read_progress(folder).step
    except LorakitError:
        return None


def resumable(folder: Path) -> Path:
    """The folder a resume from `folder` reads: for `<run>/state`, the newest complete one
    of `state/`, `.state-new` and `.state-old` (a kill between the two renames of a save
    leaves no `state/`); else `folder` itself, whatever it holds."""
    if folder.name != STATE:
        return folder
    candidates = [folder, folder.parent / FRESH, folder.parent / OLD]
    steps = {c: _complete_step(c) for c in candidates if c.is_dir()}
    complete = {c: step for c, step in steps.items() if step is not None}
    if not complete:
        return folder
    return max(complete, key=lambda c: (complete[c], c.name == STATE))


def recover(folder: Path) -> None:
    """Make `resumable(folder)` the run's `state/` and remove the swap's leftovers (the
    winner holds the latest step of the same run)."""
    winner, out = resumable(folder), folder.parent
    if folder.name != STATE or not winner.is_dir():
        return
    if winner != folder:
        parked = out / ".state-replaced"
        shutil.rmtree(parked, ignore_errors=True)
        if folder.exists():
            folder.rename(parked)
        winner.rename(folder)
        shutil.rmtree(parked, ignore_errors=True)
    for leftover in (out / FRESH, out / OLD):
        shutil.rmtree(leftover, ignore_errors=True)


class TrainState:
    """Saves and restores the parts of a run that an exact resume needs."""

    def __init__(
        self, accelerator: Any, network: Any, optimizer: Any, scheduler: Any, progress: Progress
    ):
        self.accelerator, self.network = accelerator, network
        self.optimizer, self.scheduler, self.progress = optimizer, scheduler, progress

    def _training(self) -> dict[str, Any]:
        scaler = self.accelerator.scaler
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
        }

    def _write(self, folder: Path) -> None:
        acc = self.accelerator
        atomic_write_text(rng_file(folder, acc.process_index), json.dumps(rng_state()))
        if acc.is_main_process:
            weights = self.network.kohya_state_dict(dtype=torch.float32)
            save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / LORA))
            torch.save(self._training(), folder / TRAINING)
            progress = json.dumps(self.progress.state_dict(), indent=2)
            atomic_write_text(folder / PROGRESS, progress + "\n")

    def save(self, out: Path) -> Path:
        """Write `out/state` (collective: every process adds its generators)."""
        acc = self.accelerator
        target, fresh, old = out / STATE, out / FRESH, out / OLD
        if acc.is_main_process:
            shutil.rmtree(fresh, ignore_errors=True)
            fresh.mkdir(parents=True)
        acc.wait_for_everyone()
        self._write(fresh)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (fresh / COMPLETE).write_text("lorakit state 2\n", encoding="utf-8")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                target.rename(old)
            fresh.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return target

    def load(self, folder: Path, training: dict[str, Any]) -> None:
        """Restore everything from `folder`; `training` is its already checked `training.pt`."""
        try:
            weights = load_file(str(folder / LORA))
        except (OSError, SafetensorError):
            raise LorakitError(f"{folder / LORA}: missing or damaged; cannot resume") from None
        self.network.load_kohya_state_dict(weights, strict=True)
        try:
            self.optimizer.load_state_dict(training["optimizer"])
            self.scheduler.load_state_dict(training["scheduler"])
        except (ValueError, KeyError, TypeError) as exc:
            raise LorakitError(
                f"{folder}: the saved optimizer does not fit this config ({exc}); resume with "
                "the run's own config.toml"
            ) from None
        scaler = self.accelerator.scaler
        if scaler is not None and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        self.progress.load_state_dict(read_progress(folder).state_dict())
        path = rng_file(folder, self.accelerator.process_index)
        try:
            set_rng_state(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            raise LorakitError(
                f"{path}: missing or damaged; resume with as many processes as the run had"
            ) from None
