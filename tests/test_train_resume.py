"""Stop after epoch 2 and resume from `state/`: the same LoRA as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

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


def test_resume_from_state_matches_uninterrupted_run(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    data = make_concept(tmp_path / "data", count=3)
    full = train(_config(tiny_sd15_dir, data, tmp_path / "full"))
    assert full.steps == 9

    first = train(_config(tiny_sd15_dir, data, tmp_path / "split"), stop_after_epoch=2)
    assert first.epochs_done == 2
    state = tmp_path / "split" / "state"
    assert (state / "complete").is_file()
    assert not (tmp_path / "split" / "tiny.safetensors").exists()
    resumed = train(_config(tiny_sd15_dir, data, tmp_path / "split"), resume=state)
    assert resumed.steps == 9

    want, _ = load_lora_file(tmp_path / "full" / "tiny.safetensors")
    got, _ = load_lora_file(tmp_path / "split" / "tiny.safetensors")
    assert want.keys() == got.keys()
    assert any(t.abs().max() > 0 for k, t in want.items() if "lora_up" in k)
    worst = max(float((want[k].float() - got[k].float()).abs().max()) for k in want)
    assert worst <= 1e-6
    epochs = [e["epoch"] for e in read_summary(tmp_path / "split")["epochs"]]
    assert epochs == [1, 2, 3]


def test_resume_rejects_a_folder_that_is_not_a_state(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    from lorakit.errors import LorakitError

    data = make_concept(tmp_path / "data", count=2)
    (tmp_path / "nostate").mkdir()
    config = _config(tiny_sd15_dir, data, tmp_path / "out")
    try:
        train(config, resume=tmp_path / "nostate")
    except LorakitError as exc:
        assert "nostate" in str(exc) and "state" in str(exc)
    else:
        raise AssertionError("a folder without a saved state was accepted")
