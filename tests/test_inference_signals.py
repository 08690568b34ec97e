"""`pick`'s signals on real tiny SD1.5 / SDXL runs, and its rule on constructed epochs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.inference.grid import epoch_columns
from lorakit.inference.pick import MAX_BLEED, choose
from lorakit.inference.signals import SIGNALS, prompt_kinds
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs of a real tiny run: kohya folder `2_sks disc`, two images held out."""
    model = request.getfixturevalue(f"tiny_{request.param}_dir")
    root = tmp_path_factory.mktemp(f"signals_{request.param}")
    data = make_concept(root / "data" / "2_sks disc", count=8, caption="sks disc, blue background")
    config = fast_config(
        model,
        data.parent,
        root / "out",
        dataset={"trigger": "sks"},
        optimizer={"unet_lr": 3e-3},
        validation={"enabled": True, "split": 0.25, "timesteps": 2},
    )
    train(config)
    return root / "out"


def test_prompt_kinds_put_trigger_and_class_in_front() -> None:
    expected = {
        "trigger": "sks disc, large, blue background",
        "generic": "large, blue background",
        "empty": "",
    }
    assert prompt_kinds("large, sks disc, blue background", "sks", "disc") == expected
    assert prompt_kinds("large, blue background", "sks", "disc") == expected


def test_pick_measures_stores_and_reads_back_the_signals(trained_run: Path) -> None:
    assert main(["pick", str(trained_run), "--device", "cpu"]) == 0
    summary = json.loads((trained_run / "summary.json").read_text())
    chosen = summary["pick"]
    assert [s["epoch"] for s in chosen["signals"]] == [1, 2]
    for figures in chosen["signals"]:
        assert set(SIGNALS) <= set(figures)
        assert all(math.isfinite(figures[name]) for name in SIGNALS)
    assert chosen["best_epoch"] in (1, 2) and chosen["loss_epoch"] == summary["best_epoch"]
    assert chosen["decided_by"] in SIGNALS and chosen["max_bleed"] == MAX_BLEED
    assert chosen["signal_seconds"] > 0 and "base-model pictures" in chosen["signal_source"]
    assert chosen["advice"][0].startswith(f"best epoch {chosen['best_epoch']}")
    assert chosen["advice"][1].startswith(f"lowest-loss epoch {chosen['loss_epoch']}")
    # Read back: the grid flags pick's epoch and labels every column with its figures.
    columns = epoch_columns(trained_run, summary)
    assert [c.best for c in columns] == [c.path.name == chosen["best_file"] for c in columns]
    first = chosen["signals"][0]
    assert columns[0].label == f"1 F{first['fidelity']:.2f} B{first['bleed']:.2f}"
    with Image.open(trained_run / "loss.png") as image:
        assert image.height > 700, "the signal panel below the losses is missing"
    # Measured again, the same inputs give the same figures.
    again = json.loads((trained_run / "summary.json").read_text())["pick"]["signals"]
    assert main(["pick", str(trained_run), "--device", "cpu"]) == 0
    fresh = json.loads((trained_run / "summary.json").read_text())["pick"]["signals"]
    for before, after in zip(again, fresh, strict=True):
        for name in SIGNALS:
            assert np.isclose(before[name], after[name], rtol=1e-4, atol=1e-6)


def test_no_signals_keeps_the_loss_rule(trained_run: Path) -> None:
    assert main(["pick", str(trained_run), "--no-signals"]) == 0
    chosen = json.loads((trained_run / "summary.json").read_text())["pick"]
    assert chosen["signals"] == [] and chosen["decided_by"] == "validation loss"
    assert chosen["max_bleed"] is None
    assert chosen["best_epoch"] == chosen["loss_epoch"]


def epochs(*rows: tuple[float, float]) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "fidelity": f, "bleed": b} for i, (f, b) in enumerate(rows)]


def test_rule_takes_the_earliest_nearly_best_clean_epoch() -> None:
    # Fidelity levels off from epoch 3; epoch 5 is higher still but bleeds.
    signals = epochs((0.1, 0.3), (0.2, 0.4), (0.38, 0.5), (0.39, 0.6), (0.5, 0.9))
    choice = choose(signals)
    assert choice is not None
    assert (choice.epoch, choice.decided_by) == (3, "fidelity")
    assert choice.reason.startswith("best epoch 3: fidelity 0.38 (best clean epoch 0.39)")


def test_rule_falls_back_to_the_least_bleed() -> None:
    choice = choose(epochs((0.1, 0.95), (0.2, 0.8), (0.3, 0.9)))
    assert choice is not None
    assert (choice.epoch, choice.decided_by) == (2, "bleed")
    assert choose([]) is None


def test_rule_on_negative_fidelity_still_chooses() -> None:
    # Pictures further from the subject than the base's: the least bad clean epoch.
    assert choose(epochs((-0.3, 0.1), (-0.1, 0.1))).epoch == 2
