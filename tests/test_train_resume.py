"""Stop after epoch 2 and resume from `state/`: the same LoRA as an uninterrupted run.
The run's `config.toml` repeats it exactly, from any working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.network.files import load_lora_file
from lorakit.training.checkpoint import read_summary
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept


def _config(model: Path, data: Path, out: Path):
    return fast_config(
        model,
        data,
        out,
        dataset={"repeats": 2, "flip_aug": True, "caption_dropout": 0.2},
        network={"dropout": 0.1},
        scheduler={"name": "cosine", "warmup_steps": 1},
        training={"epochs": 3},
        saving={"save_precision": "fp32"},
    )


def _worst_difference(a: Path, b: Path) -> float:
    want, _ = load_lora_file(a)
    got, _ = load_lora_file(b)
    assert want.keys() == got.keys()
    assert any(t.abs().max() > 0 for k, t in want.items() if "lora_up" in k)
    return max(float((want[k].float() - got[k].float()).abs().max()) for k in want)


def test_resume_and_repeat_match_the_uninterrupted_run(
    tiny_sd15_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Relative paths, as a user writes them in a project folder.
    monkeypatch.chdir(tmp_path)
    make_concept(tmp_path / "data", count=3)
    full = train(_config(tiny_sd15_dir, Path("data"), Path("full")))
    assert full.steps == 9

    first = train(_config(tiny_sd15_dir, Path("data"), Path("split")), stop_after_epoch=2)
    assert first.epochs_done == 2
    state = tmp_path / "split" / "state"
    assert (state / "complete").is_file()
    assert not (tmp_path / "split" / "tiny.safetensors").exists()
    resumed = train(_config(tiny_sd15_dir, Path("data"), Path("split")), resume=state)
    assert resumed.steps == 9
    want = tmp_path / "full" / "tiny.safetensors"
    assert _worst_difference(want, tmp_path / "split" / "tiny.safetensors") <= 1e-6
    full_epochs = read_summary(tmp_path / "full")["epochs"]
    split_epochs = read_summary(tmp_path / "split")["epochs"]
    assert [e["epoch"] for e in split_epochs] == [1, 2, 3]
    # The validation loss is deterministic: the same weights give the same number.
    for a, b in zip(full_epochs, split_epochs, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)

    # The resolved config.toml, given back to `lorakit train` from elsewhere, repeats the run.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = tmp_path / "again"
    config = str(tmp_path / "full" / "config.toml")
    assert main(["train", config, "--set", f'saving.output_dir="{again}"']) == 0
    assert _worst_difference(want, again / "tiny.safetensors") <= 1e-6


def test_resume_rejects_a_folder_that_is_not_a_state(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    data = make_concept(tmp_path / "data", count=2)
    (tmp_path / "nostate").mkdir()
    config = _config(tiny_sd15_dir, data, tmp_path / "out")
    with pytest.raises(LorakitError) as err:
        train(config, resume=tmp_path / "nostate")
    assert "nostate" in str(err.value) and "state" in str(err.value)
