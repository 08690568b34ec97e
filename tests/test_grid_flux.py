"""`lorakit grid` on a FLUX.1 run (the tiny FLUX.1 dev as a BFL transformer file with
separate clip_l / t5xxl / ae files, all named only in the run's config.toml): every cell is
the image `lorakit generate` makes with the same seed (weight 0: the base, the same in
every column; weight 1: the epoch's file as a `<lora:…:1>` tag), the PNG carries Forge's
FLUX.1 infotext with the X/Y axes, and SD-only options are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.metadata import parse_parameters, read_parameters
from tests import test_train_flux
from tests.test_generate_flux import PROMPT, SEED, SIDE, STEPS, _generate
from tests.test_train_flux import _config, _one_line_error, _toml

# The tiny FLUX.1 dev files, shared with the training tests.
flux = test_train_flux.flux

EPOCHS = 2


@pytest.fixture(scope="module")
def run(flux: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-epoch FLUX.1 run that saved both epochs."""
    root = tmp_path_factory.mktemp("grid_flux")
    config = _config(
        flux,
        root / "out",
        training={"epochs": EPOCHS},
        saving={"save_every_n_epochs": 1, "save_precision": "fp32"},
    )
    assert main(["train", str(_toml(config, root / "run.toml"))]) == 0
    return root / "out"


def _grid_args(run: Path, out: Path) -> list[str]:
    """The grid through the command line: only the run folder names the model files."""
    args = ["grid", str(run), "--prompt", PROMPT, "--weights", "0,1", "--seed", str(SEED)]
    args += ["--steps", str(STEPS), "--width", str(SIDE), "--height", str(SIDE)]
    return [*args, "--device", "cpu", "--out", str(out)]


@pytest.fixture(scope="module")
def grid(run: Path) -> Path:
    out = run / "grid.png"
    assert main(_grid_args(run, out)) == 0
    return out


def test_every_cell_is_lorakit_generate_with_the_same_seed(
    grid: Path, run: Path, flux: dict[str, Path], tmp_path: Path
) -> None:
    with Image.open(grid) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    # Cells fill the bottom-right corner (epochs across, weights 0 and 1 down); the labels
    # and the settings caption sit above and to the left.
    rows = columns = EPOCHS
    left, top = pixels.shape[1] - columns * SIDE, pixels.shape[0] - rows * SIDE
    assert left > 0 and top > 0

    def cell(row: int, column: int) -> np.ndarray:
        y, x = top + row * SIDE, left + column * SIDE
        return pixels[y : y + SIDE, x : x + SIDE]

    base = _generate(flux, tmp_path / "base", PROMPT)
    assert all(np.array_equal(cell(0, column), base) for column in range(columns))
    for column in range(columns):
        stem = f"tiny-{column + 1:06d}"
        tagged = f"{PROMPT} <lora:{stem}:1>"
        lora = _generate(flux, tmp_path / stem, tagged, "--lora-dir", str(run))
        assert np.array_equal(cell(1, column), lora), stem
        assert np.abs(lora - base).max() > 0, "the LoRA should change the image"
    assert not np.array_equal(cell(1, 0), cell(1, 1))


def test_the_grid_png_has_forge_flux_infotext_with_its_axes(
    grid: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = read_parameters(grid)
    info = parse_parameters(text)
    assert info.prompt == PROMPT and info.negative == ""
    assert (info.sampler, info.cfg, info.steps, info.seed) == ("Euler", 1.0, STEPS, SEED)
    assert (info.width, info.height) == (SIDE, SIDE)
    assert info.extra["Distilled CFG Scale"] == "3.5"
    modules = [info.extra[f"Module {i}"] for i in (1, 2, 3)]
    assert modules == ["ae", "clip_l", "t5xxl"]  # from the run's config.toml
    axes = {key: info.extra[key] for key in ("Script", "X Type", "X Values", "Y Type", "Y Values")}
    assert axes == {
        "Script": "X/Y/Z plot",
        "X Type": "epoch",
        "X Values": "1, 2",
        "Y Type": "LoRA weight",
        "Y Values": "0, 1",
    }
    capsys.readouterr()
    assert main(["png-info", str(grid)]) == 0
    assert capsys.readouterr().out.strip() == text


@pytest.mark.parametrize(
    ("extra", "expected"),
    [(["--cfg", "7"], "--cfg"), (["--negative", "blurry"], "--negative")],
)
def test_sd_only_options_are_one_line(
    run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    expected: str,
) -> None:
    err = _one_line_error([*_grid_args(run, tmp_path / "grid.png"), *extra], capsys)
    assert expected in err and "FLUX.1" in err
    assert not (tmp_path / "grid.png").exists()
