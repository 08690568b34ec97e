"""Samples during a real tiny `lorakit train` run, then `pick` and `grid` on its folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lorakit.cli.main import main
from lorakit.inference.metadata import parse_parameters, read_parameters
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept


@pytest.fixture(scope="module")
def run(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inference-run")
    prompts = root / "prompts.txt"
    prompts.write_text(
        "# sample prompts\nsks disc --w 64 --h 64 --s 2 --d 3\nsks, red --w 64 --h 64 --s 2\n",
        encoding="utf-8",
    )
    config = fast_config(
        tiny_sd15_dir,
        make_concept(root / "data", count=4),
        root / "out",
        dataset={"repeats": 2},
        optimizer={"unet_lr": 3e-3},
        training={"epochs": 3},
        sampling={"prompts": str(prompts), "every_n_steps": 5, "every_n_epochs": 2},
    )
    train(config)
    return root / "out"


def test_samples_appear_at_the_requested_steps_and_epochs(run: Path) -> None:
    # 4 images x 2 repeats / batch 2 = 4 steps per epoch, 3 epochs: every 5th step gives
    # steps 5 (epoch 2) and 10 (epoch 3); every 2nd epoch gives the end of epoch 2 (step 8).
    names = sorted(path.name for path in (run / "samples").glob("*.png"))
    found = sorted({tuple(map(int, re.search(r"_e(\d{6})_s(\d{6})_", n).groups())) for n in names})
    assert found == [(2, 5), (2, 8), (3, 10)]
    assert len(names) == 2 * len(found)
    info = parse_parameters(read_parameters(run / "samples" / names[0]))
    assert (info.prompt, info.seed, info.steps, info.width) == ("sks disc", 3, 2, 64)


def test_pick_and_grid_on_the_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pick", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    pick = summary["pick"]
    assert pick["best_epoch"] == summary["best_epoch"]
    assert pick["best_file"] == f"tiny-{pick['best_epoch']:06d}.safetensors"
    assert [c["to_epoch"] for c in pick["sample_changes"]] == [3]
    assert (run / "loss.png").is_file()
    args = ["grid", str(run), "--weights", "0,1", "--steps", "2", "--seed", "1", "--epochs", "3"]
    args += ["--prompt", "sks disc"]
    assert main(args) == 0
    assert (run / "grid.png").is_file()
