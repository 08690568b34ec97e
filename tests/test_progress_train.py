"""`lorakit train` as a real process with both streams in files, as on a rented GPU's log.

Results (settings, one line per epoch, where the LoRA is) go to stdout; progress of every
phase and notes go to stderr, as plain lines since stderr is not a terminal. The run is a
CPU run of an fp16 config with no OMP_NUM_THREADS, so it also shows the precision that
really ran and the thread count lorakit chose.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lorakit.network.files import load_lora_file
from lorakit.training.config import save_config
from lorakit.training.loop import train
from tests.test_train_support import concept_run

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    out: Path
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def run(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("logged")
    prompts = tmp / "prompts.txt"
    prompts.write_text("sks disc --w 64 --h 64 --s 2 --d 5\n", encoding="utf-8")
    config, out = concept_run(
        tmp,
        tiny_sd15_dir,
        count=3,
        dataset={"repeats": 4},
        training={"epochs": 2, "mixed_precision": "fp16"},
        sampling={"prompts": str(prompts), "every_n_epochs": 2},
    )
    save_config(config, tmp / "run.toml")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("OMP_NUM_THREADS", None)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    with open(tmp / "stdout.log", "w") as stdout, open(tmp / "stderr.log", "w") as stderr:
        done = subprocess.run(
            [sys.executable, "-m", "lorakit", "train", str(tmp / "run.toml")],
            env=env,
            stdout=stdout,
            stderr=stderr,
            timeout=300,
        )
    result = Run(out, (tmp / "stdout.log").read_text(), (tmp / "stderr.log").read_text())
    assert done.returncode == 0, result.stderr[-3000:]
    return result


def _lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_the_log_shows_progress_of_every_phase(run: Run) -> None:
    err = run.stderr
    assert _lines(err, "caching latents: 3/3 (100%), ")
    assert _lines(err, "caching text: 1/1 (100%), ")
    steps = _lines(err, "epoch 2/2: ")
    assert steps and steps[-1].startswith("epoch 2/2: 12/12 (100%), loss ")
    assert re.search(r"epoch 1/2: 6/12 \(50%\), loss \d\.\d{4}, [\d.]+ (it/s|s/it), elapsed", err)
    # 3 images × 2 fixed timesteps, every epoch.
    assert len(_lines(err, "validation: 6/6 (100%), ")) == 2
    assert _lines(err, "samples: 1/1 (100%), ")
    assert "\x1b[" not in err, "no terminal control codes in a log"


def test_results_go_to_stdout_and_diagnostics_to_stderr(run: Run) -> None:
    out, err = run.stdout, run.stderr
    assert "optimizer: adamw, unet lr 0.001, text encoder lr 0.0" in out
    assert "plan: 6 steps × 2 epochs (training.epochs) = total steps: 12" in out
    epochs = _lines(out, "epoch ")
    assert [line.split(":")[0] for line in epochs] == ["epoch 1", "epoch 2"]
    assert "validation loss" in epochs[0] and epochs[1].endswith("tiny-000002.safetensors")
    assert out.splitlines()[-1].startswith(f"LoRA: {run.out / 'tiny.safetensors'} (step 12")
    for progress in ("caching latents", "validation:", "samples:", "epoch 1/2:", "note:"):
        assert progress not in out
    for result in ("optimizer:", "epoch 1: train loss", "LoRA: "):
        assert result not in err


def test_a_cpu_run_says_it_trained_in_fp32(run: Run) -> None:
    assert "precision: no (fp32); training.mixed_precision fp16 needs a CUDA GPU" in run.stdout
    assert "note: fp16 needs a CUDA GPU; training in fp32 on this machine" in run.stderr
    for name in ("tiny.safetensors", "tiny-000001.safetensors"):
        _, meta = load_lora_file(run.out / name)
        assert meta["ss_mixed_precision"] == "no"


def test_a_small_model_trains_on_one_thread(run: Run) -> None:
    threads = _lines(run.stdout, "threads: ")
    assert len(threads) == 1
    rule = r"threads: 1 \(\d\.\dM-parameter U-Net: one thread is fastest below 100M\)"
    assert re.fullmatch(rule, threads[0])


def test_an_in_process_run_gives_back_the_thread_count_it_found(
    tiny_sd15_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS")
    config, _ = concept_run(tmp_path, tiny_sd15_dir, training={"epochs": 1})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(config)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert "threads: 1 (" in capsys.readouterr().out
