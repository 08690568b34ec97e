"""Ctrl-C, then `--resume`: bit for bit the run that was never interrupted.

`lorakit train` runs as a real process and gets SIGINT at different moments (while a step
file and the state are being saved, mid-step, late in the run); the resumed run must end
with exactly the uninterrupted run's tensors and step count.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from lorakit.network.files import load_lora_file
from lorakit.training.config import TrainConfig, load_config
from lorakit.training.loop import train
from tests.test_train_process import _launch, _wait_for
from tests.test_train_support import fast_config, make_concept

TOTAL = 36  # 3 images × 6 repeats × 2 epochs, batch 1
SAVE_EVERY = 4


def _config(model: Path, data: Path, out: Path) -> TrainConfig:
    """Everything that draws random numbers in a step: noise, timesteps, network dropout,
    flips and caption dropout; step saves so the test can see how far the run is."""
    return fast_config(
        model,
        data,
        out,
        dataset={"repeats": 6, "flip_aug": True, "caption_dropout": 0.2},
        network={"dropout": 0.1},
        scheduler={"name": "cosine", "warmup_steps": 2},
        training={"epochs": 2, "batch_size": 1},
        saving={"save_precision": "fp32", "save_every_n_steps": SAVE_EVERY, "keep_last": 2},
    )


@pytest.fixture(scope="module")
def uninterrupted(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    data = make_concept(root / "data", count=3)
    assert train(_config(tiny_sd15_dir, data, root / "out")).steps == TOTAL
    return root


def _steps_saved(out: Path) -> int:
    """The highest step file written so far (step files are kept 2 at a time)."""
    steps = [int(p.stem.rsplit("step", 1)[1]) for p in out.glob("tiny-step*.safetensors")]
    return max(steps, default=0)


def _interrupt(proc: subprocess.Popen, out: Path, after_step: int, fraction: float) -> str:
    """SIGINT `fraction` of a save period (4 steps and a save) after step file `after_step`
    appeared: 0 lands in the state save, larger fractions in the middle of later steps on
    a machine of any speed. Returns the run's stderr."""
    _wait_for(lambda: _steps_saved(out) >= after_step - SAVE_EVERY, proc)
    start = time.monotonic()
    _wait_for(lambda: _steps_saved(out) >= after_step, proc)
    time.sleep(fraction * (time.monotonic() - start))
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)[1]


@pytest.mark.parametrize(
    ("after_step", "fraction"),
    [(8, 0.0), (8, 0.45), (24, 0.7)],
    ids=["while-saving", "mid-step", "second-epoch"],
)
def test_ctrl_c_then_resume_equals_the_uninterrupted_run(
    tiny_sd15_dir: Path, tmp_path: Path, uninterrupted: Path, after_step: int, fraction: float
) -> None:
    out = tmp_path / "out"
    proc = _launch(_config(tiny_sd15_dir, uninterrupted / "data", out), tmp_path)
    try:
        err = _interrupt(proc, out, after_step, fraction)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    _, meta = load_lora_file(out / "tiny.safetensors")
    stopped_at = int(meta["ss_steps"])
    assert after_step <= stopped_at < TOTAL
    assert f"stopped at step {stopped_at}; continue with: lorakit train" in err

    result = train(load_config(out / "config.toml"), resume=out / "state")
    assert result.steps == TOTAL
    want, want_meta = load_lora_file(uninterrupted / "out" / "tiny.safetensors")
    got, got_meta = load_lora_file(out / "tiny.safetensors")
    assert want.keys() == got.keys()
    assert any(float(t.abs().max()) > 0 for k, t in want.items() if "lora_up" in k)
    different = [k for k in want if not torch.equal(want[k], got[k])]
    assert different == [], f"{len(different)} tensors differ, e.g. {different[:2]}"
    assert got_meta["ss_steps"] == want_meta["ss_steps"] == str(TOTAL)
    epoch_two, _ = load_lora_file(out / "tiny-000002.safetensors")
    assert all(torch.equal(epoch_two[k], want[k]) for k in want)
