"""`--resume` after crashes and tampering: what a kill leaves is cleaned up or recovered,
a pickle in `state/` is refused and never run, TensorBoard shows every step once, and a
finished run says so instead of training again."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.network.files import load_lora_file
from lorakit.training.checkpoint import SUMMARY
from lorakit.training.config import TrainConfig, load_config
from lorakit.training.loop import train
from tests.test_train_process import _launch, _wait_for
from tests.test_train_support import fast_config, make_concept


def _config(model: Path, data: Path, out: Path, **training: object) -> TrainConfig:
    return fast_config(
        model,
        data,
        out,
        dataset={"repeats": 2, "flip_aug": True},
        network={"dropout": 0.1},
        training={"epochs": 3, **training},
        saving={"save_precision": "fp32"},
    )


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_lora_file(path)[0]


def _equal(a: Path, b: Path) -> bool:
    want, got = _tensors(a), _tensors(b)
    return want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def full(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (3 epochs); its data folder is shared by the other runs."""
    root = tmp_path_factory.mktemp("full")
    make_concept(root / "data", count=3)
    train(_config(tiny_sd15_dir, root / "data", root / "out"))
    return root


def _stopped(model: Path, full: Path, out: Path, epoch: int = 1) -> TrainConfig:
    config = _config(model, full / "data", out)
    train(config, stop_after_epoch=epoch)
    return config


def _kill_leftover(out: Path, target: str) -> Path:
    """The hidden temporary `atomic_path` leaves when a kill lands during that save."""
    leftover = out / f".{target}.k1ll3d_x.tmp"
    leftover.write_bytes(b"\x00" * 100)  # a partial safetensors header
    return leftover


def test_resume_removes_what_a_kill_during_a_save_left(
    tiny_sd15_dir: Path, tmp_path: Path, full: Path
) -> None:
    out = tmp_path / "out"
    config = _stopped(tiny_sd15_dir, full, out)
    leftovers = [_kill_leftover(out, "tiny-000002.safetensors"), _kill_leftover(out, SUMMARY)]
    unrelated = out / ".notes.k1ll3d_x.tmp"  # not a file of this run: kept
    unrelated.write_text("mine", encoding="utf-8")
    train(config, resume=out / "state")
    assert [p for p in leftovers if p.exists()] == []
    assert unrelated.read_text(encoding="utf-8") == "mine"
    assert _equal(full / "out" / "tiny.safetensors", out / "tiny.safetensors")


def test_a_kill_during_the_first_state_save_says_how_to_go_on(
    tiny_sd15_dir: Path, tmp_path: Path, full: Path
) -> None:
    out = tmp_path / "out"
    config = _stopped(tiny_sd15_dir, full, out)
    # What a kill while the first state is written leaves: an incomplete .state-new.
    (out / "state").rename(out / ".state-new")
    (out / ".state-new" / "complete").unlink()
    with pytest.raises(LorakitError) as err:
        train(config, resume=out / "state")
    message = str(err.value)
    assert "\n" not in message and "killed during its first state save" in message
    assert "--overwrite" in message
    assert f'--set network.weights="{out / "tiny-000001.safetensors"}"' in message


def test_a_kill_between_the_state_renames_is_recovered(
    tiny_sd15_dir: Path, tmp_path: Path, full: Path
) -> None:
    out = tmp_path / "out"
    config = _stopped(tiny_sd15_dir, full, out, epoch=1)
    shutil.copytree(out / "state", tmp_path / "epoch1-state")
    train(config, resume=out / "state", stop_after_epoch=2)
    # Killed after `state` became `.state-old` and before `.state-new` became `state`.
    (out / "state").rename(out / ".state-new")
    shutil.copytree(tmp_path / "epoch1-state", out / ".state-old")
    result = train(config, resume=out / "state")
    assert result.steps == 9
    assert _equal(full / "out" / "tiny.safetensors", out / "tiny.safetensors")
    assert not (out / ".state-new").exists() and not (out / ".state-old").exists()


class _WritesMarker:
    """A pickle that creates a file when loaded: what a tampered state could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.parametrize("name", ["training.pt", "custom_checkpoint_0.pkl"])
def test_a_tampered_state_is_refused_and_never_unpickled(
    tiny_sd15_dir: Path,
    tmp_path: Path,
    full: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
) -> None:
    out = tmp_path / "out"
    _stopped(tiny_sd15_dir, full, out)
    marker = tmp_path / "marker"
    (out / "state" / name).write_bytes(pickle.dumps(_WritesMarker(marker)))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    code = main(["train", str(out / "config.toml"), "--resume", str(out / "state")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{out / 'state'}" in err and "--overwrite" in err
    assert not marker.exists()
    assert _snapshot(tmp_path) == before


def _logged_steps(logs: Path, tag: str) -> list[int]:
    """The steps of `tag` TensorBoard shows: files in order, and a session start at step N
    (`SummaryWriter(purge_step=N)`) hides what earlier files logged from step N on."""
    steps: list[int] = []
    for path in sorted(logs.glob("events.out.tfevents.*"), key=lambda p: p.name.split(".")[3]):
        for event in EventFileLoader(str(path)).Load():
            if event.session_log.status == SessionLog.START:
                steps = [s for s in steps if s < event.step]
            steps += [event.step for v in event.summary.value if v.tag == tag]
    return steps


def _saved_step(out: Path) -> int:
    """The newest step file's step: the state saved with it is at most this far."""
    return max((int(p.stem[-8:]) for p in out.glob("tiny-step*.safetensors")), default=0)


def test_tensorboard_shows_each_step_once_after_a_kill_and_resume(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    data = make_concept(tmp_path / "data", count=3)
    out = tmp_path / "out"
    config = fast_config(
        tiny_sd15_dir,
        data,
        out,
        dataset={"repeats": 8},
        training={"epochs": 1, "batch_size": 1, "log_every_n_steps": 1},
        saving={"save_every_n_steps": 6},
    )
    proc = _launch(config, tmp_path)
    try:
        # Kill once the log is ahead of the saved state: those steps will be logged again.
        def ahead() -> bool:
            saved = _saved_step(out)
            logged = _logged_steps(out / "logs", "loss/current") if saved > 0 else []
            return bool(logged) and max(logged) > saved

        _wait_for(ahead, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert train(load_config(out / "config.toml"), resume=out / "state").steps == 24
    steps = _logged_steps(out / "logs", "loss/current")
    assert steps == list(range(1, 25))


def test_resuming_a_finished_run_says_it_is_done(
    tmp_path: Path, full: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(full / "out", out)
    before = _snapshot(out)
    capsys.readouterr()
    code = main(["train", str(full / "out" / "config.toml"), "--set",
                 f'saving.output_dir="{out}"', "--resume", str(out / "state")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "this run is finished (step 9, epoch 3)" in captured.out
    assert f"LoRA: {out / 'tiny.safetensors'}" in captured.out
    assert "epoch 1/3" not in captured.err and "caching" not in captured.err
    assert _snapshot(out) == before
    assert os.listdir(out / "logs") == os.listdir(full / "out" / "logs")
