"""`lorakit train --dry-run`: the resolved settings to review, and the family checked
against the model file, with nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.cli.main import main
from tests.helpers.ldm import write_ldm_checkpoint
from tests.test_train_support import make_concept

KOHYA_SDXL = Path(__file__).parent / "fixtures" / "kohya_ss" / "SDXL-Standard-Adafactor.json"


@pytest.fixture(scope="module")
def sd15_file(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SD1.5 single-file checkpoint (the LDM layout of v1-5-pruned-emaonly)."""
    out = tmp_path_factory.mktemp("ldm") / "sd15.safetensors"
    return write_ldm_checkpoint(tiny_sd15_dir, out, "sd15")


def _files(root: Path) -> dict[Path, float]:
    return {path: path.stat().st_mtime_ns for path in root.rglob("*")}


def _dry_run(tmp_path: Path, model: Path, *args: str, toml: str = "") -> int:
    """`lorakit train run.toml ARGS --dry-run` with the model, a concept folder and an
    output folder set; checks that no file appeared or changed."""
    data = make_concept(tmp_path / "data", count=4)
    config = tmp_path / "run.toml"
    config.write_text(toml, encoding="utf-8")
    sets = {
        "model.path": f'"{model}"',
        "dataset.path": f'"{data}"',
        "saving.output_dir": f'"{tmp_path / "out"}"',
    }
    argv = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    before = _files(tmp_path)
    code = main(["train", str(config), *args, *argv, "--dry-run"])
    assert _files(tmp_path) == before, "a dry run must write nothing"
    return code


def test_dry_run_prints_the_family_and_every_resolved_setting(
    sd15_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    toml = (
        "[network]\nrank = 8\nalpha = 4.0\nconv_rank = 2\nconv_alpha = 1.0\n"
        '[optimizer]\nname = "adamw"\nunet_lr = 2e-4\ntext_encoder_lr = 1e-5\n'
        "args = { betas = [0.9, 0.99] }\n"
        '[scheduler]\nname = "cosine_with_restarts"\nwarmup_steps = 10\nnum_cycles = 3\n'
        '[training]\nmixed_precision = "fp16"\nseed = 123\nepochs = 3\ncpu_threads = 2\n'
    )
    assert _dry_run(tmp_path, sd15_file, toml=toml) == 0
    out = capsys.readouterr().out.splitlines()
    expected = [
        f"base model: {sd15_file}",
        "family: sd15 (from the file)",
        "resolution: 512 (the sd15 native size)",
        "network: rank 8, alpha 4.0, conv rank 2, conv alpha 1.0",
        "optimizer: adamw, unet lr 0.0002, text encoder lr 1e-05, weight decay 0.01, "
        "args {'betas': [0.9, 0.99]}",
        "scheduler: cosine_with_restarts, warmup 10 steps, 3 cycles",
        "batch: 1 × grad_accum 1",
        "precision: no (fp32); training.mixed_precision fp16 needs a CUDA GPU",
        "seed: 123",
        "threads: 2 (training.cpu_threads)",
        "plan: 4 steps × 3 epochs (training.epochs) = total steps: 12",
    ]
    for line in expected:
        assert line in out


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('model.family="sdxl"', "model.family = 'sdxl'"),
        ("optimizer.text_encoder_lr=[1e-4, 1e-5]", "sets SDXL's two"),
    ],
)
def test_an_sdxl_setting_on_an_sd15_file_stops_the_dry_run(
    sd15_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setting: str,
    message: str,
) -> None:
    assert _dry_run(tmp_path, sd15_file, "--set", setting) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(sd15_file) in err and message in err and "sd15" in err


def test_an_imported_sdxl_kohya_config_on_an_sd15_file_stops_the_dry_run(
    sd15_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _dry_run(tmp_path, sd15_file, "--from-kohya", str(KOHYA_SDXL)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorakit: error: ") and "\n" not in err
    assert f"{sd15_file}: is family sd15, but model.family = 'sdxl'" in err


def test_the_family_of_a_model_that_is_not_here_is_trusted_and_said_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "models" / "sdxl.safetensors"
    assert _dry_run(tmp_path, missing, "--set", 'model.family="sdxl"') == 0
    out = capsys.readouterr().out
    assert f"family: sdxl (model.family; {missing} is not here, so not checked)" in out
    assert "resolution: 1024 (the sdxl native size)" in out
