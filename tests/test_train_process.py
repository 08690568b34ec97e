"""`lorakit train` as a real process: SIGKILL mid-epoch, and a 2-process gloo run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorakit.network.files import load_lora_file
from lorakit.training.config import TrainConfig, load_config, save_config
from lorakit.training.loop import train
from tests.test_train_support import concept_run

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"training exited early: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    raise AssertionError("training did not reach the expected point in time")


def _launch(config: TrainConfig, tmp_path: Path) -> subprocess.Popen:
    """`lorakit train run.toml` in a child process, stdout and stderr captured."""
    save_config(config, tmp_path / "run.toml")
    return subprocess.Popen(
        [sys.executable, "-m", "lorakit", "train", str(tmp_path / "run.toml")],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_epoch_leaves_loadable_files(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    config, out = concept_run(
        tmp_path,
        tiny_sd15_dir,
        count=3,
        dataset={"repeats": 8},
        training={"epochs": 2, "batch_size": 1},
        saving={"save_every_n_steps": 2, "keep_last": 3},
    )
    proc = _launch(config, tmp_path)
    try:
        _wait_for(lambda: len(list(out.glob("tiny-step*.safetensors"))) >= 3, proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = [p for p in out.glob("*.safetensors") if not p.name.startswith(".")]
    assert saved
    assert len(list(out.glob("tiny-step*.safetensors"))) <= 3  # keep_last
    for path in saved:
        state, meta = load_lora_file(path)
        assert state and meta["ss_network_dim"] == "4"
    load_config(out / "config.toml")
    if (out / "summary.json").exists():
        json.loads((out / "summary.json").read_text())
    # The state saved with the last step file resumes and finishes the run.
    result = train(load_config(out / "config.toml"), resume=out / "state")
    assert result.steps == 48
    load_lora_file(out / "tiny.safetensors")


def test_ctrl_c_saves_state_and_the_current_lora(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    config, out = concept_run(
        tmp_path,
        tiny_sd15_dir,
        dataset={"repeats": 30},
        training={"epochs": 1, "batch_size": 1},
        saving={"save_every_n_steps": 2, "save_state": False},
    )
    proc = _launch(config, tmp_path)
    try:
        _wait_for(lambda: any(out.glob("tiny-step*.safetensors")), proc)
        proc.send_signal(signal.SIGINT)
        printed, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    # The settings are printed (a result: stdout) before training starts.
    assert "adamw, unet lr 0.001, text encoder lr 0.0" in printed
    assert "total steps: 60" in printed
    _, meta = load_lora_file(out / "tiny.safetensors")
    assert int(meta["ss_steps"]) < 60
    assert (out / "state" / "complete").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_through_accelerate_launch(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    config, out = concept_run(
        tmp_path, tiny_sd15_dir, count=4, dataset={"repeats": 2}, training={"epochs": 2}
    )
    save_config(config, tmp_path / "run.toml")
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()),
        "-m", "lorakit", "train", str(tmp_path / "run.toml"),
    ]  # fmt: skip
    # `--cpu` makes accelerate start a single process; `--multi_gpu` on a machine without
    # CUDA starts torchrun workers that join a gloo process group (MULTI_CPU).
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # 4 images × 2 repeats / batch 2 = 4 batches per epoch, 2 per process.
    assert [e["step"] for e in summary["epochs"]] == [2, 4]
    assert {p.name for p in (out / "state").glob("rng-*.json")} == {"rng-0.json", "rng-1.json"}
    state, _ = load_lora_file(out / "tiny.safetensors")
    assert any(float(t.abs().max()) > 0 for k, t in state.items() if "lora_up" in k)
