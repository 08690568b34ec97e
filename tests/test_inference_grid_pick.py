"""The epoch × weight grid, loss.png and `pick` on run folders built on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.inference.generate import GenerateOptions, generate
from lorakit.inference.grid import (
    GridColumn,
    GridSpec,
    epoch_columns,
    file_columns,
    make_grid,
)
from lorakit.inference.grid_render import SDGridRenderer
from lorakit.inference.layout import BEST_FILL, Axes, compose_block
from lorakit.inference.lossplot import plot_loss
from lorakit.inference.metadata import parse_parameters, read_parameters
from lorakit.inference.pick import analyse
from lorakit.inference.prompt import LoraRef
from lorakit.models import load_base_model
from tests.test_inference_generate import make_lora

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
    summary["best_epoch"] = 2
    (folder / "summary.json").write_text(json.dumps(summary))
    base = load_base_model(tiny_sd15_dir)
    for epoch in (1, 2):
        make_lora(base, folder / f"run-{epoch:06d}.safetensors", seed=epoch)
    return folder


def cell(grid: np.ndarray, left: int, top: int, row: int, col: int) -> np.ndarray:
    y, x = top + row * CELL, left + col * CELL
    return grid[y : y + CELL, x : x + CELL]


def ink_height(region: np.ndarray) -> int:
    """Height in px from the first to the last row holding dark (text) pixels."""
    rows = np.flatnonzero((region < 110).all(axis=-1).any(axis=1))
    return int(rows[-1] - rows[0] + 1) if rows.size else 0


def test_grid_cells_labels_and_loss_png(run_dir: Path, tiny_sd15_dir: Path) -> None:
    out = run_dir / "grid.png"
    args = ["grid", str(run_dir), "--prompt", "sks dog", "--weights", "0,1", "--steps", "2"]
    assert main([*args, "--seed", "4", "--device", "cpu"]) == 0
    with Image.open(out) as image:
        grid = np.asarray(image.convert("RGB"), dtype=np.int16)
    # Cells fill the bottom-right corner; labels sit above and to the left.
    label_w, header_h = grid.shape[1] - 2 * CELL, grid.shape[0] - 2 * CELL
    assert label_w > 0 and header_h > 0
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
    # Readable at 64 px cells: text at least ~9 px tall (a 13 px font), not a smudge.
    header = grid[header_h - 3 * 20 : header_h, label_w : label_w + CELL]
    assert ink_height(header) >= 9, "column label missing or too small"
    assert ink_height(grid[header_h : header_h + CELL, label_w // 3 : label_w]) >= 9
    # The best epoch (2, from summary.json) has a highlighted header; epoch 1 does not.
    best_fill = np.array(BEST_FILL)
    headers = grid[header_h - 20 : header_h]
    assert (headers[:, label_w + CELL :] == best_fill).all(axis=-1).any()
    assert not (headers[:, label_w : label_w + CELL] == best_fill).all(axis=-1).any()
    with Image.open(run_dir / "loss.png") as loss:
        assert loss.size[0] > 200 and loss.size[1] > 100

    stacked = run_dir / "stacked.png"
    sr = ["--search-replace", "dog,cat", "--out", str(stacked), "--epochs", "2"]
    assert main([*args, "--seed", "4", *sr]) == 0
    with Image.open(stacked) as image:
        blocks = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert blocks.shape[1] == label_w + CELL
    assert blocks.shape[0] > 2 * (header_h + 2 * CELL) - header_h
    cat = cell(blocks, label_w, blocks.shape[0] - 2 * CELL, 0, 0)
    assert not np.array_equal(cat, expected), "the bottom block should show the replaced prompt"
    info = parse_parameters(read_parameters(stacked))  # A1111's X/Y/Z plot keys parse back
    assert (info.sampler, info.steps, info.seed) == ("Euler a", 2, 4)
    axes = {key: value for key, value in info.extra.items() if key[1:] in (" Type", " Values")}
    assert axes == {
        "X Type": "epoch",
        "X Values": "2",
        "Y Type": "LoRA weight",
        "Y Values": "0, 1",
        "Z Type": "Prompt S/R",
        "Z Values": "dog, cat",
    }


@pytest.mark.parametrize("cell_size", [64, 512])
def test_labels_scale_with_the_cell(cell_size: int) -> None:
    image = Image.new("RGB", (cell_size, cell_size), (120, 160, 200))
    axes = Axes("epoch", ["2", "4 (best)"], "LoRA weight", ["0", "0.4", "1"], best_column=1)
    block = np.asarray(compose_block([[image] * 2] * 3, axes, "prompt: sks dog"), dtype=np.int16)
    top, left = block.shape[0] - 3 * cell_size, block.shape[1] - 2 * cell_size
    assert (block[top:, left:] == (120, 160, 200)).all(), "cells must be pasted untouched"
    digits = ink_height(block[top : top + cell_size, left // 3 : left])  # row label "0"
    assert digits >= max(9, cell_size // 24)
    assert ink_height(block[top:, : left // 3]) > digits, "vertical 'LoRA weight' title missing"


def test_file_columns_move_the_shared_prefix_to_the_axis_title() -> None:
    paths = [Path("out/myface_v3-000004.safetensors"), Path("out/myface_v3-000006.safetensors")]
    columns, title = file_columns(paths)
    assert ([c.label for c in columns], title) == (["000004", "000006"], "LoRA file (myface_v3-…)")
    columns, title = file_columns([Path("a/style.safetensors"), Path("b/face.safetensors")])
    assert ([c.label for c in columns], title) == (["style", "face"], "LoRA file")


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


def test_grid_cells_have_the_requested_size(run_dir: Path, tiny_sd15_dir: Path) -> None:
    base = load_base_model(tiny_sd15_dir)
    lora = run_dir / "run-000001.safetensors"
    spec = GridSpec("sks", [GridColumn("1", lora)], weights=[0.5])
    settings = GenerateOptions(prompt="sks", width=128, height=64, steps=1)
    grid = make_grid(SDGridRenderer(base, settings), spec, run_dir / "wide.png")
    with Image.open(grid) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    options = GenerateOptions(prompt="sks", width=128, height=64, steps=1, seed=spec.seed)
    expected = generate(base, options, loras=[LoraRef("1", lora, 0.5)])[0].image
    assert np.array_equal(pixels[-64:, -128:], np.asarray(expected, dtype=np.int16))
    assert pixels.shape[1] > 128 and pixels.shape[0] > 64, "labels missing"


def test_epoch_columns_flag_the_best_and_reject_unsaved_epochs(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    columns = epoch_columns(run_dir, summary)
    assert [(c.label, c.path.name, c.best) for c in columns] == [
        ("1", "run-000001.safetensors", False),
        ("2", "run-000002.safetensors", True),
    ]
    with pytest.raises(LorakitError, match="epoch 5; saved epochs: 1, 2"):
        epoch_columns(run_dir, summary, [2, 5])


def green_pixels(path: Path) -> int:
    """Pixels of matplotlib's tab:green, the colour of the best-epoch marks."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return int((np.abs(rgb - (44, 160, 44)).sum(axis=-1) < 30).sum())


@pytest.mark.parametrize("count", [1, 60])
def test_loss_png_marks_the_best_epoch(tmp_path: Path, count: int) -> None:
    val = [0.3 - 0.001 * i + 0.00005 * i * i for i in range(count)]
    folder = write_run(tmp_path / "run", val, [0.3 - 0.002 * i for i in range(count)])
    summary = json.loads((folder / "summary.json").read_text())
    best = 1 + int(np.argmin(val))
    plot_loss(summary, tmp_path / "plain.png")
    plot_loss(summary, tmp_path / "best.png", best_epoch=best)
    with Image.open(tmp_path / "best.png") as image:
        assert image.width > 600 and image.height > 300
    assert green_pixels(tmp_path / "plain.png") == 0
    assert green_pixels(tmp_path / "best.png") > 200
