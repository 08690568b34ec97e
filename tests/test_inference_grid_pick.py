"""The epoch × weight grid, loss.png and `pick` on run folders built on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.generate import GenerateOptions, generate
from lorakit.inference.pick import analyse
from lorakit.models import load_base_model
from tests.test_inference_generate import make_lora, single_thread  # noqa: F401

CELL = 64


def write_run(folder: Path, val: list[float], train: list[float], files: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    epochs = [
        {
            "epoch": i + 1,
            "step": 10 * (i + 1),
            "train_loss": t,
            "val_loss": v,
            "file": f"run-{i + 1:06d}.safetensors" if files else None,
        }
        for i, (v, t) in enumerate(zip(val, train, strict=True))
    ]
    summary = {"name": "run", "family": "sd15", "trigger": "sks", "epochs": epochs, "note": "keep"}
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def run_dir(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = write_run(tmp_path_factory.mktemp("run"), [0.3, 0.25], [0.3, 0.2])
    summary = json.loads((folder / "summary.json").read_text())
    summary["base_model"] = str(tiny_sd15_dir)
    (folder / "summary.json").write_text(json.dumps(summary))
    base = load_base_model(tiny_sd15_dir)
    for epoch in (1, 2):
        make_lora(base, folder / f"run-{epoch:06d}.safetensors", seed=epoch)
    return folder


def cell(grid: np.ndarray, left: int, top: int, row: int, col: int) -> np.ndarray:
    y, x = top + row * CELL, left + col * CELL
    return grid[y : y + CELL, x : x + CELL]


def test_grid_cells_labels_and_loss_png(run_dir: Path, tiny_sd15_dir: Path) -> None:
    out = run_dir / "grid.png"
    args = ["grid", str(run_dir), "--prompt", "sks dog", "--weights", "0,1", "--steps", "2"]
    assert main([*args, "--seed", "4", "--device", "cpu"]) == 0
    with Image.open(out) as image:
        grid = np.asarray(image.convert("RGB"), dtype=np.int16)
    label_w, header_h = grid.shape[1] - 2 * CELL, grid.shape[0] - 2 * CELL
    assert label_w > 0 and header_h > 0
    assert grid[:header_h, label_w:].std() > 0, "column labels missing"
    assert grid[header_h:, :label_w].std() > 0, "row labels missing"
    base = load_base_model(tiny_sd15_dir)
    plain = generate(base, GenerateOptions(prompt="sks dog", steps=2, seed=4))[0].image
    expected = np.asarray(plain, dtype=np.int16)
    assert np.array_equal(cell(grid, label_w, header_h, 0, 0), expected)
    assert np.array_equal(cell(grid, label_w, header_h, 0, 1), expected)
    for col in (0, 1):
        assert np.abs(cell(grid, label_w, header_h, 1, col) - expected).mean() > 1.0
    assert not np.array_equal(
        cell(grid, label_w, header_h, 1, 0), cell(grid, label_w, header_h, 1, 1)
    )
    with Image.open(run_dir / "loss.png") as loss:
        assert loss.size[0] > 200 and loss.size[1] > 100

    stacked = run_dir / "stacked.png"
    sr = ["--search-replace", "dog,cat", "--out", str(stacked), "--epochs", "2"]
    assert main([*args, "--seed", "4", *sr]) == 0
    with Image.open(stacked) as image:
        assert image.size == (label_w + CELL, 2 * (2 * header_h + 2 * CELL))


def test_grid_without_trigger_or_prompt_is_an_error(tmp_path: Path, capsys) -> None:
    folder = write_run(tmp_path / "run", [0.2], [0.2])
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("trigger")
    (folder / "summary.json").write_text(json.dumps(summary))
    assert main(["grid", str(folder)]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_pick_flags_overfitting_and_keeps_other_keys(tmp_path: Path) -> None:
    folder = write_run(
        tmp_path / "run", [0.30, 0.25, 0.22, 0.24, 0.27], [0.3, 0.2, 0.15, 0.1, 0.08]
    )
    assert main(["pick", str(folder)]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["note"] == "keep" and len(summary["epochs"]) == 5
    pick = summary["pick"]
    assert (pick["best_epoch"], pick["best_file"]) == (3, "run-000003.safetensors")
    assert pick["overfitting"] is True and pick["undertrained"] is False
    assert any(line.startswith("overfitting") for line in pick["advice"])
    assert (folder / "loss.png").is_file()


def test_pick_flags_undertraining(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run", [0.30, 0.25, 0.20], [0.3, 0.25, 0.2])
    report = analyse(folder)
    assert report.best_epoch == 3 and report.undertrained and not report.overfitting
    assert any("run-000003.safetensors" in line for line in report.advice if "undertrained" in line)


def test_flat_loss_is_neither(tmp_path: Path) -> None:
    report = analyse(write_run(tmp_path / "run", [0.2, 0.2, 0.2001], [0.2, 0.2, 0.2]))
    assert not report.overfitting and not report.undertrained


def test_pick_sees_samples_stop_changing(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run", [0.3, 0.2, 0.19, 0.185], [0.3, 0.2, 0.19, 0.18])
    samples = folder / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)

    def save(epoch: int, step: int, pixels: np.ndarray) -> None:
        Image.fromarray(pixels.astype(np.uint8)).save(
            samples / f"run_e{epoch:06d}_s{step:06d}_00.png"
        )

    first, second = rng.integers(0, 256, (32, 32, 3)), rng.integers(0, 256, (32, 32, 3))
    save(1, 10, first)
    save(2, 20, second)
    save(3, 25, first)  # earlier sample within epoch 3: superseded by step 30
    save(3, 30, np.clip(second + 1, 0, 255))
    save(4, 40, np.clip(second + 1, 0, 255))
    report = analyse(folder)
    assert [c.to_epoch for c in report.sample_changes] == [2, 3, 4]
    assert report.sample_changes[0].diff > 50
    assert report.sample_changes[1].diff < 2 and report.sample_changes[2].diff == 0
    assert report.samples_still_from == 2
    assert any("samples stop changing after epoch 2" in line for line in report.advice)


def test_pick_on_a_folder_without_summary(tmp_path: Path, capsys) -> None:
    assert main(["pick", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err
