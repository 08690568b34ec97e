"""The run folder: one run per folder (`--overwrite` moves an old one aside), and what the
README's workflow needs from it afterwards: `lorakit grid out/` from any folder, with the
trigger and the base model the run recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from lorakit.cli.main import main
from lorakit.training.checkpoint import read_summary
from tests.helpers.photos import draw_photo
from tests.test_train_support import fast_config, make_concept


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _run_toml(tmp: Path, model: Path, data: Path, out: Path, epochs: int) -> Path:
    config = fast_config(model, data, out, training={"epochs": epochs, "log_every_n_steps": 1})
    path = tmp / f"run{epochs}.toml"
    path.write_text(tomli_w.dumps(config.to_dict()), encoding="utf-8")
    return path


def test_a_new_run_into_a_finished_runs_folder_is_refused_or_moves_it_aside(
    tiny_sd15_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_concept(tmp_path / "data", count=2)
    out = tmp_path / "out"
    assert main(["train", str(_run_toml(tmp_path, tiny_sd15_dir, data, out, 4))]) == 0
    old = _snapshot(out)
    assert "tiny-000004.safetensors" in old
    capsys.readouterr()

    short = str(_run_toml(tmp_path, tiny_sd15_dir, data, out, 1))
    assert main(["train", short]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == ""
    line = lines[0]
    assert f'{out} holds run "tiny" (epoch 4, step 4)' in line
    assert f"--resume {out / 'state'}" in line
    assert "new saving.output_dir" in line and "--overwrite" in line
    assert _snapshot(out) == old

    assert main(["train", short, "--overwrite"]) == 0
    (aside,) = out.glob(".previous-*")
    assert _snapshot(aside) == old  # moved, byte for byte; nothing deleted
    top = sorted(p.name for p in out.glob("*.safetensors"))
    assert top == ["tiny-000001.safetensors", "tiny.safetensors"]
    assert [e["epoch"] for e in read_summary(out)["epochs"]] == [1]
    capsys.readouterr()
    assert main(["pick", str(out)]) == 0
    assert read_summary(out)["pick"]["best_file"] == "tiny-000001.safetensors"


def test_readme_flow_grid_finds_trigger_and_base_model_from_another_folder(
    tiny_sd15_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prep → train (relative paths, as in the README's run.toml) → grid from elsewhere."""
    project = tmp_path / "project"
    photos = project / "photos"
    photos.mkdir(parents=True)
    for i in range(3):
        draw_photo(i, (96, 96)).save(photos / f"p{i}.png")
    (project / "models").mkdir()
    (project / "models" / "base").symlink_to(tiny_sd15_dir)
    monkeypatch.chdir(project)
    prep = ["dataset", "prep", "photos", "run", "--trigger", "qz7", "--class", "woman"]
    assert main([*prep, "--repeats", "2"]) == 0
    config = {
        "model": {"path": "models/base"},
        "dataset": {"path": "run/img", "resolution": 64, "bucket_min": 64, "bucket_max": 128},
        "network": {"rank": 4, "alpha": 4.0},
        "optimizer": {"name": "adamw", "unet_lr": 1e-3, "text_encoder_lr": 0.0},
        "training": {"epochs": 2, "batch_size": 2, "mixed_precision": "no"},
        "saving": {"output_dir": "out", "name": "qz7"},
        "validation": {"timesteps": 1},
    }
    Path("run.toml").write_text(tomli_w.dumps(config), encoding="utf-8")
    assert main(["train", "run.toml"]) == 0

    summary = json.loads((project / "out" / "summary.json").read_text())
    assert (summary["trigger"], summary["class"]) == ("qz7", "woman")
    assert summary["base_model"] == str(project / "models" / "base")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    grid = ["grid", str(project / "out"), "--steps", "1", "--width", "64", "--height", "64"]
    assert main([*grid, "--weights", "0,1", "--seed", "3", "--device", "cpu"]) == 0
    assert (project / "out" / "grid.png").is_file()
