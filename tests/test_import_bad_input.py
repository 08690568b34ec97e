"""Bad import and resolution input through a real `lorakit` process: one line on stderr,
exit 2, no traceback, nothing written (not even the imported sample prompts) and every
existing file unchanged.

Entries are (name, argv, setup) as in the CLI bad-input corpus: `setup(tmp)` writes the
inputs, "{tmp}" in argv is that folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from lorakit.models.components import TINY_BASE_DIR
from tests.test_train_support import make_concept

Setup = Callable[[Path], None]
MODEL = ["--set", 'model.path="/models/sd15.safetensors"', "--set", 'model.family="sd15"']


def _kohya(name: str, **settings: object) -> Setup:
    """A kohya_ss GUI save with a dataset, an output folder and inline sample prompts."""

    def setup(tmp: Path) -> None:
        (tmp / "img" / "10_subject").mkdir(parents=True)
        data = {
            "pretrained_model_name_or_path": "/models/sd15.safetensors",
            "train_data_dir": str(tmp / "img"),
            "output_dir": str(tmp / "out"),
            "output_name": "subject",
            "sample_prompts": "a photo of subject",
            "sample_every_n_epochs": 1,
            **settings,
        }
        (tmp / name).write_text(json.dumps(data), encoding="utf-8")

    return setup


def _toml(dataset: str) -> Setup:
    """A TOML config that would train (the shipped tiny model, real images) but for
    `dataset`'s settings."""

    def setup(tmp: Path) -> None:
        data = make_concept(tmp / "img", count=2)
        body = (
            f'[model]\npath = "{TINY_BASE_DIR}"\n'
            f'[dataset]\npath = "{data}"\nbucket_min = 64\n{dataset}\n'
            '[training]\nepochs = 1\nmixed_precision = "no"\n'
            "[validation]\nenabled = false\n"
            f'[saving]\noutput_dir = "{tmp / "out"}"\n'
        )
        (tmp / "run.toml").write_text(body, encoding="utf-8")

    return setup


CASES: list[tuple[str, list[str], Setup]] = [
    (
        "kohya LoKr config",
        ["train", "--from-kohya", "{tmp}/lokr.json", *MODEL],
        _kohya(
            "lokr.json",
            LoRA_type="LyCORIS/LoKr",
            network_dim=100000,
            network_alpha=1,
            conv_dim=100000,
            conv_alpha=1,
            factor=8,
        ),
    ),
    (
        "kohya iA3 config",
        ["train", "--from-kohya", "{tmp}/ia3.json", *MODEL],
        _kohya("ia3.json", LoRA_type="LyCORIS/iA3", network_dim=1024, network_alpha=1024),
    ),
    (
        "kohya config with max_resolution 100",
        ["train", "--from-kohya", "{tmp}/small.json", *MODEL],
        _kohya("small.json", LoRA_type="Standard", network_dim=8, max_resolution="100,100"),
    ),
    (
        "TOML resolution 100",
        ["train", "{tmp}/run.toml"],
        _toml("resolution = 100"),
    ),
    (
        "--set dataset.resolution=100",
        ["train", "{tmp}/run.toml", "--set", "dataset.resolution=100"],
        _toml("resolution = 64"),
    ),
]


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(("name", "argv", "setup"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, name: str, argv: list[str], setup: Setup
) -> None:
    setup(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("an earlier run's file", encoding="utf-8")
    before = _snapshot(tmp_path)
    dirs_before = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    result = subprocess.run(
        [sys.executable, "-m", "lorakit", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, (name, result.stderr)
    err = result.stderr.strip()
    assert err.startswith("lorakit: error: ") and "\n" not in err, err
    assert "Traceback" not in result.stderr
    assert str(tmp_path) in err  # names the file
    assert _snapshot(tmp_path) == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == dirs_before
