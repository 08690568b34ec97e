"""Resolutions the buckets cannot honour are refused, from a TOML config, `--set` and
imports alike, with the nearest sizes that work (a side off the bucket step would train at
a smaller square than the run's metadata states: 100 trains in the 64 bucket)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.training.config import config_from_dict, load_config
from lorakit.training.data import bucket_set
from lorakit.training.import_civitai import import_civitai
from lorakit.training.import_kohya import import_kohya


def _toml(tmp_path: Path, dataset: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(f"[dataset]\n{dataset}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("dataset", "fix"),
    [
        ("resolution = 100", "use 64 or 128"),
        ("resolution = 650", "use 640 or 704"),
        ("resolution = 1000\nbucket_step = 32", "use 992 or 1024"),
    ],
)
def test_a_toml_resolution_off_the_bucket_step_is_refused(
    tmp_path: Path, dataset: str, fix: str
) -> None:
    path = _toml(tmp_path, dataset)
    with pytest.raises(LorakitError) as excinfo:
        load_config(path)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{path}: dataset.resolution = ")
    assert "is not a multiple of dataset.bucket_step" in message and message.endswith(fix)


def test_set_is_checked_too_and_valid_sizes_pass(tmp_path: Path) -> None:
    path = _toml(tmp_path, "resolution = 512")
    with pytest.raises(LorakitError, match="use 64 or 128"):
        load_config(path, ["dataset.resolution=100"])
    config = load_config(path, ["dataset.resolution=768"])
    # every bucket of a valid size is on the grid and the square is the size itself
    buckets = bucket_set(config, config.dataset.resolution)
    assert max(b.width for b in buckets if b.width == b.height) == 768


@pytest.mark.parametrize(
    ("max_resolution", "fix"),
    [("100", "use 64 or 128"), ("100,100", "use 64 or 128"), ("1000,1000", "use 960 or 1024")],
)
def test_an_imported_size_off_the_bucket_step_is_refused(
    tmp_path: Path, max_resolution: str, fix: str
) -> None:
    path = tmp_path / "kohya.json"
    settings = {"LoRA_type": "Standard", "network_dim": 8, "max_resolution": max_resolution}
    path.write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(LorakitError) as excinfo:
        import_kohya(path)
    message = str(excinfo.value)
    assert "\n" not in message and message.startswith(f"{path}: 'max_resolution' ")
    assert "bucket step 64" in message and message.endswith(fix)


def test_an_imported_step_other_than_64_is_the_grid(tmp_path: Path) -> None:
    path = tmp_path / "kohya.json"
    settings = {"network_dim": 8, "max_resolution": "1000,1000", "bucket_reso_steps": 8}
    path.write_text(json.dumps(settings), encoding="utf-8")
    config = config_from_dict(import_kohya(path).overrides)
    assert (config.dataset.resolution, config.dataset.bucket_step) == (1000, 8)


def test_a_non_square_size_trains_at_the_square_of_its_area_and_says_so(tmp_path: Path) -> None:
    """sd-scripts' buckets for "512,768" hold at most 512×768 pixels; its square bucket is
    576 (627 rounded down to the step), the side lorakit trains at."""
    path = tmp_path / "kohya.json"
    settings = {"network_dim": 8, "max_resolution": "512,768"}
    path.write_text(json.dumps(settings), encoding="utf-8")
    result = import_kohya(path)
    assert config_from_dict(result.overrides).dataset.resolution == 576
    note = "max_resolution 512,768 is not square: lorakit trains at 576, the largest square"
    assert any(n.startswith(note) for n in result.notes)


def test_civitai_resolution_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "civitai.json"
    path.write_text(json.dumps({"networkDim": 8, "resolution": 100}), encoding="utf-8")
    with pytest.raises(LorakitError, match="'resolution' 100 is not a multiple"):
        import_civitai(path)
